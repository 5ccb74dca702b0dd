"""Retriever state: check-before-change, LRU capacity with requests in flight, refresh, offline loads, threads."""

from __future__ import annotations

import gc
import shutil
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.test_runtime_mixed import TEXTS, _one_thread, oracle_text, pixels, publish, retriever, store  # noqa: F401
from vopstore import Retriever
from vopstore.store import open_store, pull

ATOL = 1e-5


def state(r: Retriever):
    """What a refused change must leave exactly as it was."""
    loaded = {task: info.digest for task, info in r.loaded.items()}
    return r.snapshot().bank, loaded, r.encode_text(TEXTS[:2], task="local/a")


def assert_unchanged(r: Retriever, before) -> None:
    bank, loaded, emb = before
    assert r.snapshot().bank is bank
    assert {task: info.digest for task, info in r.loaded.items()} == loaded
    torch.testing.assert_close(r.encode_text(TEXTS[:2], task="local/a"), emb, atol=0, rtol=0)


def _foreign_set(tiny_backbone, path: Path, fingerprint: str, method: str = "vop") -> Path:
    from vopstore.checkpoint import PromptSetMeta, save_checkpoint
    from vopstore.prompts import build_method

    tensors = dict(build_method("vop", tiny_backbone, text_prompts=2, visual_prompts=2).named_parameters())
    meta = PromptSetMeta(method=method, config={"text_prompts": 2, "visual_prompts": 2}, backbone_name="other",
                         backbone_fingerprint=fingerprint, dtype="float32",
                         params=sum(t.numel() for t in tensors.values()))
    save_checkpoint(path, tensors, meta)
    return path


def test_refused_loads_change_nothing(tiny_backbone, store, retriever, tmp_path, monkeypatch):
    from vopstore.errors import (BackboneMismatchError, BlobIntegrityError, TaskNotFoundError, UnknownMethodError,
                                 VersionNotFoundError)

    publish(store, tiny_backbone, tmp_path, "local/a", "vop", 0)
    retriever.load("local/a")
    before = state(retriever)
    store.add("local/a", _foreign_set(tiny_backbone, tmp_path / "fp.safetensors", "0" * 64))  # v2, other backbone
    with pytest.raises(BackboneMismatchError, match="trained on backbone other"):
        retriever.load("local/a@v2")
    assert_unchanged(retriever, before)
    unknown = _foreign_set(tiny_backbone, tmp_path / "m.safetensors", tiny_backbone.fingerprint, "vop-x")
    with pytest.raises(UnknownMethodError, match="vop-x"):
        store.add("local/x", unknown)  # the store refuses it; one stored before that check existed:
    with monkeypatch.context() as legacy:
        legacy.setattr("vopstore.prompts.schema.check_prompt_set", lambda *args, **kwargs: None)
        store.add("local/x", unknown)
    with pytest.raises(UnknownMethodError, match="vop-x"):
        retriever.load("local/x")
    assert_unchanged(retriever, before)
    info, _ = publish(store, tiny_backbone, tmp_path, "local/a", "vop", 5)  # v3, then a flipped byte in its blob
    blob = next(Path(store.blobs.root).rglob(info.digest))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(BlobIntegrityError, match="corrupt"):
        retriever.load("local/a@v3")
    assert_unchanged(retriever, before)
    with pytest.raises(VersionNotFoundError):
        retriever.load("local/a@v9")
    with pytest.raises(TaskNotFoundError):
        retriever.load("local/nope")
    assert_unchanged(retriever, before)


def test_unload_and_loaded(tiny_backbone, store, retriever, tmp_path):
    from vopstore.errors import NotFoundError

    info, _ = publish(store, tiny_backbone, tmp_path, "local/a", "vop", 0)
    assert retriever.load("a") == info  # default tenant
    assert retriever.loaded["local/a"].ref == "local/a@v1"
    assert retriever.unload("a").digest == info.digest
    assert dict(retriever.loaded) == {}
    with pytest.raises(NotFoundError):
        retriever.unload("local/a")


def test_lru_eviction_spares_requests_in_flight(tiny_backbone, store, tmp_path):
    r = Retriever(tiny_backbone, store=store, max_tasks=2)
    files = {}
    for seed, task in enumerate("abcdef"):
        _, files[task] = publish(store, tiny_backbone, tmp_path, f"local/{task}", "vop", seed)
    r.load("local/a")
    r.load("local/b")
    pinned = r.snapshot()  # a request in flight holds this snapshot
    expected = {t: oracle_text(tiny_backbone, files[t], TEXTS) for t in "ab"}
    r.encode_text(TEXTS[:1], task="local/a")  # b is now the least recently used

    loader = threading.Thread(target=lambda: [r.load(f"local/{t}") for t in "cde"])
    loader.start()
    loader.join()
    assert set(r.loaded) == {"local/d", "local/e"}
    for t in "ab":  # evicted, and the slots they used were refilled? not while the snapshot lives
        torch.testing.assert_close(pinned.encode_text(TEXTS, task=f"local/{t}"), expected[t], atol=ATOL, rtol=0)
    torch.testing.assert_close(r.encode_text(TEXTS, task="local/e"), oracle_text(tiny_backbone, files["e"], TEXTS),
                               atol=ATOL, rtol=0)
    del pinned
    gc.collect()
    for _ in range(3):  # without pinned snapshots, evicted slots are reused: storage stops growing
        for t in "abcdef":
            r.load(f"local/{t}")
    (storage,) = r._builder.storages.values()
    assert storage.capacity <= 8
    assert set(r.loaded) == {"local/e", "local/f"}


def test_max_bytes(tiny_backbone, store, tmp_path):
    from vopstore.errors import ConfigError

    for seed, task in enumerate("abc"):
        publish(store, tiny_backbone, tmp_path, f"local/{task}", "vop", seed)
    one = Retriever(tiny_backbone, store=store)
    one.load("local/a")
    size = one.loaded_bytes
    r = Retriever(tiny_backbone, store=store, max_bytes=int(2.5 * size))
    for task in "abc":
        r.load(f"local/{task}")
    assert set(r.loaded) == {"local/b", "local/c"} and r.loaded_bytes == 2 * size
    tight = Retriever(tiny_backbone, store=store, max_bytes=size - 1)
    with pytest.raises(ConfigError, match="capacity"):
        tight.load("local/a")
    assert dict(tight.loaded) == {}


def test_refresh_follows_a_moved_alias(tiny_backbone, store, retriever, tmp_path):
    v1, f1 = publish(store, tiny_backbone, tmp_path, "local/a", "vop", 1)
    store.tag(v1.ref, "prod")
    publish(store, tiny_backbone, tmp_path, "local/b", "vop-c", 2)
    retriever.load("local/a@prod")
    retriever.load("local/b")
    assert retriever.refresh() == {}
    old = retriever.snapshot()
    v2, f2 = publish(store, tiny_backbone, tmp_path, "local/a", "vop", 7)
    store.tag(v2.ref, "prod")
    changed = retriever.refresh()
    assert {t: i.ref for t, i in changed.items()} == {"local/a": "local/a@v2"}
    assert retriever.loaded["local/a"].digest == v2.digest
    torch.testing.assert_close(retriever.encode_text(TEXTS, task="local/a"), oracle_text(tiny_backbone, f2, TEXTS),
                               atol=ATOL, rtol=0)
    # a request that began before the switch still sees v1 for every row
    torch.testing.assert_close(old.encode_text(TEXTS, task="local/a"), oracle_text(tiny_backbone, f1, TEXTS),
                               atol=ATOL, rtol=0)


def test_remote_pull_refresh_and_offline_from_cache(tiny_backbone, tmp_path):
    from vopstore.home import local_store_dir

    remote_dir = tmp_path / "remote"
    remote = open_store(str(remote_dir))
    v1, _ = publish(remote, tiny_backbone, tmp_path, "acme/lsmdc", "vop-f", 1)
    remote.tag(v1.ref, "prod")
    r = Retriever(tiny_backbone, remote=str(remote_dir))
    assert r.load("acme/lsmdc@prod").digest == v1.digest  # pulled into the local store + cache
    v2, f2 = publish(remote, tiny_backbone, tmp_path, "acme/lsmdc", "vop-f", 2)
    remote.tag(v2.ref, "prod")
    assert r.refresh()["acme/lsmdc"].digest == v2.digest
    expected = r.encode_text(TEXTS, task="acme/lsmdc")
    remote.close()
    shutil.rmtree(remote_dir)  # the remote is gone ...
    shutil.rmtree(local_store_dir() / "blobs")  # ... and so are the local store's blobs: only the cache is left
    fresh = Retriever(tiny_backbone, remote=str(remote_dir))
    assert fresh.load("acme/lsmdc@prod").digest == v2.digest
    torch.testing.assert_close(fresh.encode_text(TEXTS, task="acme/lsmdc"), expected, atol=0, rtol=0)


def test_offline_after_pull_from_s3(tiny_backbone, tmp_path, s3_bucket, s3_env, monkeypatch):
    remote_url, blobs = f"sqlite:///{tmp_path / 'remote.db'}", f"s3://{s3_bucket}/vop"
    remote = open_store(remote_url, blobs=blobs)
    info, path = publish(remote, tiny_backbone, tmp_path, "acme/msrvtt", "vop-p", 3)
    local = open_store()
    pull(remote, local, "acme/msrvtt@v1")
    for obj in s3_env.client().list_objects_v2(Bucket=s3_bucket).get("Contents", []):
        s3_env.client().delete_object(Bucket=s3_bucket, Key=obj["Key"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    r = Retriever(tiny_backbone, remote=open_store(remote_url, blobs=blobs))
    assert r.load("acme/msrvtt@v1").digest == info.digest
    torch.testing.assert_close(r.encode_text(TEXTS, task="acme/msrvtt"), oracle_text(tiny_backbone, path, TEXTS),
                               atol=ATOL, rtol=0)


def test_threads_match_single_threaded_results(tiny_backbone, store, retriever, tmp_path):
    for seed, (task, method) in enumerate([("local/a", "vop"), ("local/c", "vop-c"), ("local/f", "vop-f+c")]):
        publish(store, tiny_backbone, tmp_path, task, method, seed)
        retriever.load(task)
    pix = pixels(3, seed=11)
    requests = []
    for i, task in enumerate(["local/a", "local/c", "local/f", None] * 3):
        requests.append(("text", TEXTS[i % 6 : i % 6 + 2], dict(task=task)))
        requests.append(("video", pix[i % 3 :], dict(task=task)))
    requests.append(("video", pix, dict(tasks=["local/f", "local/c", "local/a"])))
    requests.append(("text", TEXTS[:3], dict(tasks=["local/c", None, "local/f"])))

    def run(request):
        kind, data, kwargs = request
        fn = retriever.encode_text if kind == "text" else retriever.encode_video
        return fn(data, **kwargs)

    expected = [run(q) for q in requests]
    publish(store, tiny_backbone, tmp_path, "local/z", "vop-c", 9)
    churn = threading.Thread(target=lambda: [retriever.load("local/z") or retriever.unload("local/z")
                                             for _ in range(5)])
    churn.start()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(run, requests * 3))
    churn.join()
    for i, out in enumerate(got):
        torch.testing.assert_close(out, expected[i % len(requests)], atol=ATOL, rtol=0)


def test_refresh_keeps_a_load_that_committed_while_it_resolved(tiny_backbone, store, retriever, tmp_path,
                                                               monkeypatch):
    v1, _ = publish(store, tiny_backbone, tmp_path, "local/a", "vop", 1)
    store.tag(v1.ref, "prod")
    retriever.load("local/a@prod")
    v2, _ = publish(store, tiny_backbone, tmp_path, "local/a", "vop", 2)
    store.tag(v2.ref, "prod")  # refresh will see prod -> v2 ...
    v3, f3 = publish(store, tiny_backbone, tmp_path, "local/a", "vop", 3)
    resolve = retriever.source.resolve
    raced = []

    def resolve_then_load(ref):  # ... while a load of v3 commits between its resolve and its commit
        info = resolve(ref)
        if ref == "local/a@prod" and not raced:
            raced.append(None)
            raced[0] = retriever.load("local/a@v3")
        return info

    monkeypatch.setattr(retriever.source, "resolve", resolve_then_load)
    assert retriever.refresh() == {}
    assert raced[0].digest == v3.digest
    assert retriever.loaded["local/a"].digest == v3.digest  # the concurrent load was not undone
    torch.testing.assert_close(retriever.encode_text(TEXTS, task="local/a"), oracle_text(tiny_backbone, f3, TEXTS),
                               atol=ATOL, rtol=0)


def test_emptied_groups_release_their_storage(tiny_backbone, store, tmp_path):
    r = Retriever(tiny_backbone, store=store, max_tasks=1)
    files = {}
    for n in range(1, 9):  # each config is its own (method, config) group
        _, files[n] = publish(store, tiny_backbone, tmp_path, f"local/g{n}", "vop", n, visual_prompts=n)
    r.load("local/g1")
    pinned = r.snapshot()  # a request in flight on g1's group
    for n in range(2, 9):
        r.load(f"local/g{n}")
        held = sum(t.numel() * t.element_size() for s in r._builder.storages.values() for t in s.tensors.values())
        assert len(r._builder.storages) == 1 and held <= 2 * r.loaded_bytes, (n, held, r.loaded_bytes)
    torch.testing.assert_close(pinned.encode_text(TEXTS, task="local/g1"), oracle_text(tiny_backbone, files[1], TEXTS),
                               atol=ATOL, rtol=0)
    r.load("local/g1")  # a dropped group comes back in a fresh storage
    torch.testing.assert_close(r.encode_text(TEXTS, task="local/g1"), oracle_text(tiny_backbone, files[1], TEXTS),
                               atol=ATOL, rtol=0)


def test_a_remote_that_does_not_answer_is_logged_and_the_store_serves(tiny_backbone, store, tmp_path, caplog):
    from vopstore.errors import StoreUnavailableError

    class Unreachable:
        default_tenant = "local"

        def resolve(self, ref):
            raise StoreUnavailableError("registry http://10.0.0.9:8000 unreachable: connection refused")

    info, path = publish(store, tiny_backbone, tmp_path, "local/a", "vop", 0)
    r = Retriever(tiny_backbone, store=store, remote=Unreachable())
    with caplog.at_level("WARNING", logger="vopstore.runtime.loader"):
        assert r.load("local/a").digest == info.digest
    warned = [rec for rec in caplog.records if rec.name == "vopstore.runtime.loader"]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    assert "local/a" in warned[0].getMessage() and "connection refused" in warned[0].getMessage()
    torch.testing.assert_close(r.encode_text(TEXTS, task="local/a"), oracle_text(tiny_backbone, path, TEXTS),
                               atol=ATOL, rtol=0)
