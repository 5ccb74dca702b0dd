"""Galleries and search: results equal a brute-force oracle over Retriever's own embeddings; an index
answers only for the exact prompts it was built with; appends, removals, decode-once fan-out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_runtime_mixed import TINY_METHODS, _one_thread  # noqa: F401

TEXTS = ["a red square moves left", "a blue circle grows", "two shapes", "a green triangle", "something spins"]
ATOL = 1e-5
FRAMES = 4


@pytest.fixture(scope="session")
def gallery_clips(tmp_path_factory):
    """Ten tiny 32x32 mp4 clips (8 frames each) in one folder, plus a non-video file."""
    from tests.fixtures.videos import write_clip
    from vopstore.trainer.data.synthetic import sample_twins

    root = tmp_path_factory.mktemp("gallery-clips")
    specs = sample_twins(10, np.random.default_rng(11), distinct=True)
    paths = [write_clip(root / f"v{i:02d}.mp4", spec, frames=8) for i, spec in enumerate(specs)]
    (root / "notes.txt").write_text("not a video")
    return paths


@pytest.fixture
def store():
    from vopstore.store import open_store

    registry = open_store()
    yield registry
    registry.close()


@pytest.fixture
def retriever(tiny_backbone, store):
    from vopstore import Retriever

    return Retriever(tiny_backbone, store=store)


@pytest.fixture
def galleries(tmp_path):
    from vopstore.gallery import Galleries

    return Galleries(tmp_path / "galleries")


def publish(store, backbone, tmp_path, task, method="vop", seed=0, frames=FRAMES):
    """Add a seeded prompt set as the next version of ``task``, trained (says its record) on ``frames`` frames."""
    from vopstore.prompts import build_method

    path = tmp_path / f"{task.replace('/', '_')}-{method}-{seed}.safetensors"
    build_method(method, backbone, seed=seed, **{**TINY_METHODS[method], "init_std": 0.5}).save(path, backbone)
    return store.add(task, path, training_config={"num_frames": frames})


def oracle(retriever, texts, rows, paths, k):
    """Brute force: every row's normalised query against every video embedded alone for its task."""
    ids = [p.stem for p in paths]
    queries = retriever.encode_text(texts, tasks=rows, normalize=True).numpy()
    out = []
    for query, task in zip(queries, rows):
        videos = retriever.encode_video(paths, task=task, normalize=True).numpy()
        scores = videos @ query
        order = np.argsort(-scores, kind="stable")[:k]
        out.append([(ids[i], float(scores[i])) for i in order])
    return out


def assert_hits(got, expected):
    assert len(got) == len(expected)
    for g_row, e_row in zip(got, expected):
        assert [vid for vid, _ in g_row] == [vid for vid, _ in e_row]
        np.testing.assert_allclose([s for _, s in g_row], [s for _, s in e_row], atol=ATOL, rtol=0)


class CountingDecode:
    """Counts vopstore.video.decode_frames calls (the decode step of every video file path)."""

    def __init__(self, monkeypatch):
        from vopstore import video

        self.calls, real = [], video.decode_frames

        def decode(path, num_frames=12):
            self.calls.append((str(path), num_frames))
            return real(path, num_frames)

        monkeypatch.setattr(video, "decode_frames", decode)


def test_mixed_task_search_equals_bruteforce_and_decodes_once(tiny_backbone, store, retriever, galleries,
                                                             gallery_clips, tmp_path, monkeypatch):
    publish(store, tiny_backbone, tmp_path, "acme/a", "vop", 0)
    publish(store, tiny_backbone, tmp_path, "acme/b", "vop-f", 1)
    retriever.load_many(["acme/a", "acme/b"])
    paths = gallery_clips[:8]
    galleries.create("acme/clips", paths)
    counter = CountingDecode(monkeypatch)
    built = galleries.build_many(retriever, "acme/clips", ["acme/a", "acme/b"], progress=False, batch_size=3)
    assert sorted(counter.calls) == sorted((str(p.resolve()), FRAMES) for p in paths)  # each video once, 2 tasks
    assert {r["task"] for r in built.values()} == {"acme/a@v1", "acme/b@v1"}
    assert all(r["rows"] == 8 and r["added"] == 8 and r["kind"] == "flat" for r in built.values())
    monkeypatch.undo()

    rows = ["acme/b", "acme/a", "acme/a", "acme/b", "acme/a"]
    got = retriever.search(TEXTS, tasks=rows, gallery="acme/clips", k=5, galleries=galleries)
    assert_hits(got, oracle(retriever, TEXTS, rows, paths, 5))
    # the library call with a snapshot and torch queries gives the same; k beyond the gallery gives all rows
    snap = retriever.snapshot()
    queries = snap.encode_text(TEXTS[:2], tasks=rows[:2], normalize=True)
    assert_hits(galleries.search(snap, queries, rows[:2], "acme/clips", k=5), got[:2])
    everything = galleries.search(snap, queries.numpy(), rows[:2], "acme/clips", k=50)
    assert [len(r) for r in everything] == [8, 8]
    assert_hits(everything, oracle(retriever, TEXTS[:2], rows[:2], paths, 8))
    # the tasks really differ, so a row searched in the other task's index would be caught
    assert got[0] != retriever.search(TEXTS[:1], task="acme/a", gallery="acme/clips", k=5, galleries=galleries)[0]
    # a rebuild with nothing new embeds nothing and decodes nothing
    counter = CountingDecode(monkeypatch)
    again = galleries.build(retriever, "acme/clips", "acme/a", progress=False)
    assert again["added"] == 0 and counter.calls == []


def test_tasks_with_other_frame_counts_decode_once_per_count(tiny_backbone, store, retriever, galleries,
                                                            gallery_clips, tmp_path, monkeypatch):
    publish(store, tiny_backbone, tmp_path, "local/f4a", seed=0)
    publish(store, tiny_backbone, tmp_path, "local/f4b", seed=1)
    publish(store, tiny_backbone, tmp_path, "local/f2", seed=2, frames=2)
    retriever.load_many(["f4a", "f4b", "f2"])
    paths = gallery_clips[:4]
    galleries.create("clips", {f"id-{i}": p for i, p in enumerate(paths)})
    counter = CountingDecode(monkeypatch)
    galleries.build_many(retriever, "clips", ["f4a", "f4b", "f2"], progress=False)
    assert sorted(n for _, n in counter.calls) == [2] * 4 + [4] * 4
    monkeypatch.undo()
    got = retriever.search(TEXTS[:3], tasks=["f2", "f4b", "f2"], gallery="local/clips", k=4, galleries=galleries)
    expected = oracle(retriever, TEXTS[:3], ["local/f2", "local/f4b", "local/f2"], paths, 4)
    assert_hits(got, [[(f"id-{paths.index(next(p for p in paths if p.stem == vid))}", s) for vid, s in row]
                      for row in expected])


def test_append_then_remove(tiny_backbone, store, retriever, galleries, gallery_clips, tmp_path):
    from vopstore.errors import ConfigError, NotFoundError

    publish(store, tiny_backbone, tmp_path, "local/a")
    retriever.load("local/a")
    first, later = gallery_clips[:5], gallery_clips[5:9]
    galleries.create("clips", first)
    galleries.build(retriever, "clips", "local/a", progress=False)
    galleries.add_videos("clips", later)
    with pytest.raises(ConfigError, match="already has video id"):
        galleries.add_videos("clips", later[:1])
    # not built yet: the index holds the first five only, and says so
    assert {vid for vid, _ in retriever.search(TEXTS[0], task="a", gallery="clips", k=20, galleries=galleries)[0]} \
        == {p.stem for p in first}
    assert galleries.list()[0]["indexes"][0]["missing"] == 4
    result = galleries.build(retriever, "clips", "local/a", progress=False)
    assert (result["rows"], result["added"]) == (9, 4)
    got = retriever.search(TEXTS, task="local/a", gallery="clips", k=9, galleries=galleries)
    assert_hits(got, oracle(retriever, TEXTS, ["local/a"] * len(TEXTS), first + later, 9))

    removed = [first[1].stem, later[0].stem]
    galleries.remove_videos("clips", removed)
    kept = [p for p in first + later if p.stem not in removed]
    assert list(galleries.videos("clips")) == [p.stem for p in kept]
    got = retriever.search(TEXTS, task="local/a", gallery="clips", k=20, galleries=galleries)
    assert_hits(got, oracle(retriever, TEXTS, ["local/a"] * len(TEXTS), kept, 20))
    [index] = galleries.list()[0]["indexes"]
    assert (index["rows"], index["missing"]) == (7, 0)
    objects = list((galleries.root / "local" / "clips" / "objects").glob("*.safetensors"))
    assert [p.stem for p in objects] == [index["digest"]]  # replaced index files are collected
    with pytest.raises(NotFoundError, match="no video"):
        galleries.remove_videos("clips", ["nope"])
    # a fresh Galleries (another process) reads the same from disk, verified
    from vopstore.gallery import Galleries

    assert_hits(Galleries(galleries.root).search(retriever.snapshot(), retriever.encode_text(TEXTS, task="local/a",
                normalize=True), "local/a", "clips", k=20), got)


def test_index_is_refused_for_another_version_until_built(tiny_backbone, store, retriever, galleries,
                                                         gallery_clips, tmp_path):
    from vopstore.errors import NotFoundError

    v1 = publish(store, tiny_backbone, tmp_path, "acme/lsmdc", seed=0)
    store.tag(v1.ref, "prod")
    retriever.load("acme/lsmdc@prod")
    paths = gallery_clips[:6]
    galleries.create("acme/clips", paths)
    galleries.build(retriever, "acme/clips", "acme/lsmdc", progress=False)
    old = retriever.snapshot()
    before = retriever.search(TEXTS, task="acme/lsmdc", gallery="acme/clips", k=6, galleries=galleries)

    v2 = publish(store, tiny_backbone, tmp_path, "acme/lsmdc", seed=5)
    store.tag(v2.ref, "prod")
    assert retriever.refresh()["acme/lsmdc"].digest == v2.digest
    assert not galleries.has_index(retriever.snapshot(), "acme/clips", "acme/lsmdc")
    assert galleries.has_index(old, "acme/clips", "acme/lsmdc")
    with pytest.raises(NotFoundError) as caught:
        retriever.search(TEXTS, task="acme/lsmdc", gallery="acme/clips", galleries=galleries)
    message = str(caught.value)
    assert "\n" not in message and f"({v2.digest[:12]}" in message
    assert "build it: vopstore index build acme/clips --task acme/lsmdc@v2" in message
    # a request still holding the old snapshot keeps searching the old index with the old prompts
    old_queries = old.encode_text(TEXTS, task="acme/lsmdc", normalize=True)
    assert_hits(galleries.search(old, old_queries, "acme/lsmdc", "acme/clips", k=6), before)

    got = retriever.search(TEXTS, task="acme/lsmdc", gallery="acme/clips", k=6, galleries=galleries,
                           build_missing=True)
    assert_hits(got, oracle(retriever, TEXTS, ["acme/lsmdc"] * len(TEXTS), paths, 6))
    assert got != before
    assert sorted(i["task"] for i in galleries.list()[0]["indexes"]) == ["acme/lsmdc@v1", "acme/lsmdc@v2"]


def test_bad_input_and_tampering_name_the_fix(tiny_backbone, store, retriever, galleries, gallery_clips, tmp_path):
    from vopstore.errors import (BlobIntegrityError, ConfigError, ConflictError, FileMissingError, InvalidRefError,
                                 NotFoundError)
    from vopstore.gallery import Galleries

    publish(store, tiny_backbone, tmp_path, "local/a")
    retriever.load("local/a")
    with pytest.raises(NotFoundError, match="no gallery local/none; create it"):
        retriever.search(TEXTS[0], task="local/a", gallery="none", galleries=galleries)
    with pytest.raises(InvalidRefError):
        galleries.create("a/b/c", [])
    with pytest.raises(ConfigError, match="duplicate video id"):
        galleries.create("x", [gallery_clips[0], tmp_path / "v00.mp4"])
    with pytest.raises(FileMissingError):
        galleries.create("x", {"a": tmp_path / "missing.mp4"})
    galleries.create("clips", gallery_clips[:3])
    with pytest.raises(ConflictError):
        galleries.create("local/clips", [])
    with pytest.raises(ConfigError, match="k must be"):
        retriever.search(TEXTS[0], task="local/a", gallery="clips", k=0, galleries=galleries)
    with pytest.raises(NotFoundError, match="not loaded"):
        retriever.search(TEXTS[0], task="local/zzz", gallery="clips", galleries=galleries)
    result = galleries.build(retriever, "clips", "local/a", progress=False)
    # a corrupt index file is refused when loaded (fresh Galleries: nothing cached)
    path = galleries.root / "local" / "clips" / "objects" / f"{result['digest']}.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BlobIntegrityError, match="corrupt"):
        Galleries(galleries.root).search(retriever.snapshot(), np.zeros((1, 16), np.float32), "local/a", "clips")
    # an undecodable video: what came before it is indexed, the error names the id and the fix
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not an mp4 at all")
    galleries.create("mixed", {"ok1": gallery_clips[0], "broken": bad, "ok2": gallery_clips[1]})
    from vopstore.errors import DataError

    with pytest.raises(DataError, match="'broken'.*vopstore index rm local/mixed --id broken"):
        galleries.build(retriever, "mixed", "local/a", progress=False, batch_size=1)
    assert galleries.describe("mixed")["indexes"][0]["rows"] == 1
    galleries.remove_videos("mixed", ["broken"])
    assert galleries.build(retriever, "mixed", "local/a", progress=False)["rows"] == 2


def test_plain_clip_rows_and_an_empty_gallery(tiny_backbone, retriever, galleries, gallery_clips):
    galleries.create("empty")
    assert galleries.build(retriever, "empty", None, progress=False)["rows"] == 0
    assert retriever.search(TEXTS[:2], gallery="empty", galleries=galleries) == [[], []]
    galleries.create("clips", gallery_clips[:4])
    got = retriever.search(TEXTS[:2], gallery="clips", k=3, galleries=galleries, build_missing=True)
    assert_hits(got, oracle(retriever, TEXTS[:2], [None, None], gallery_clips[:4], 3))


def test_hnsw_and_ivf_recall_on_random_vectors():
    """Approximate kinds against exact inner product on 5,000 random unit vectors (D=64), and round-tripped."""
    from vopstore.core import sha256_bytes
    from vopstore.gallery.index import IndexKey, make_index, parse_index

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5000, 64), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((200, 64), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = [f"v{i}" for i in range(len(vectors))]
    key = IndexKey("0" * 64, "1" * 64, 12)
    exact = make_index(key, ids, vectors, "flat", {}).search(queries, 10)
    oracle = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert [[vid for vid, _ in row] for row in exact] == [[ids[i] for i in row] for row in oracle]
    for kind, floor in (("hnsw", 0.9), ("ivf", 0.6)):
        index = make_index(key, ids, vectors, kind, {})
        data = index.to_bytes()
        loaded = parse_index(data, sha256_bytes(data), key, "test")
        for candidate in (index, loaded):
            got = candidate.search(queries, 10)
            recall = np.mean([len({v for v, _ in g} & {v for v, _ in e}) / 10 for g, e in zip(got, exact)])
            assert recall >= floor, (kind, recall)
        # appending extends the structure; scores of what it returns are exact inner products
        grown = make_index(key, ids + ["new"], np.concatenate([vectors, queries[:1]]), kind, {}, previous=loaded)
        assert grown.rows == 5001 and grown.faiss.ntotal == 5001
        assert grown.search(queries[:1], 1)[0][0][0] == "new"


def _one_index(tmp_path):
    """A gallery folder holding one flat index written to disk; (a fresh Galleries, folder, pointer path, key)."""
    from vopstore.gallery import Galleries
    from vopstore.gallery.index import IndexKey, make_index

    video = tmp_path / "a.mp4"
    video.write_bytes(b"not decoded here")
    writer = Galleries(tmp_path / "root")
    writer.create("g", [video])
    folder = writer._dir("g")
    key = IndexKey("0" * 64, "1" * 64, 4)
    pointer_path = folder / "indexes" / f"{key.hash}.json"
    writer._write_index(folder, pointer_path, make_index(key, ["a"], np.eye(1, 8, dtype=np.float32), "flat", {}))
    return Galleries(tmp_path / "root"), folder, pointer_path, key


def test_an_index_collected_between_pointer_and_file_reads_is_read_again(tmp_path):
    reader, folder, pointer_path, key = _one_index(tmp_path)
    real = reader._pointer
    reads = []

    def stale_then_real(path):  # the first read sees the pointer a concurrent rebuild has just replaced
        reads.append(path)
        pointer = real(path)
        return {**pointer, "digest": "f" * 64} if len(reads) == 1 else pointer

    reader._pointer = stale_then_real
    index = reader._load_path(folder, pointer_path, key)
    assert len(reads) == 2 and index.ids == ["a"]


def test_an_index_file_gone_for_good_names_the_fix(tmp_path):
    from vopstore.errors import BlobIntegrityError

    reader, folder, pointer_path, key = _one_index(tmp_path)
    for path in (folder / "objects").iterdir():
        path.unlink()
    reads = []
    real = reader._pointer
    reader._pointer = lambda path: reads.append(path) or real(path)
    with pytest.raises(BlobIntegrityError, match=r"index file its pointer names is missing; rebuild the index"):
        reader._load_path(folder, pointer_path, key)
    assert len(reads) == 3  # three tries, then the one-line error
