"""The Retriever's README promises, each broken on purpose at least once while writing these tests.

* ``refresh()`` and ``load_many()`` are all-or-nothing: one set that fails its checks (another
  backbone, a corrupt blob, a missing version) and NOTHING switches, not even the sets that were
  prepared before it (a task-by-task commit fails these tests).
* A request in flight keeps its snapshot; a slot is reused only when no snapshot can read it:
  real in-place slot reuse under a held snapshot (freeing retired slots at once fails these tests),
  and readers holding snapshots while other threads load, unload, evict and refresh.

Oracles: each version's own single-set forward from its file (``oracle_text``), keyed by digest, so
a reader checks what it got against the exact version its snapshot says it had loaded.
Synchronisation is by Barriers only (no sleeps); every loop is bounded.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
import torch

from tests.test_runtime_lifecycle import _foreign_set
from tests.test_runtime_mixed import TEXTS, _one_thread, oracle_text, pixels, publish, retriever, store  # noqa: F401
from vopstore import Retriever

ATOL = 1e-5


def _corrupt(store, info) -> None:
    """Flip one byte of the version's blob in the store (the cache has never seen it)."""
    blob = next(Path(store.blobs.root).rglob(info.digest))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))


def _bad_version(kind: str, store, backbone, tmp_path, task: str):
    """Add a new version of ``task`` that fails ``prepare``; return (its info, the error it raises)."""
    from vopstore.errors import BackboneMismatchError, BlobIntegrityError

    if kind == "backbone":
        path = _foreign_set(backbone, tmp_path / f"{task.replace('/', '_')}-foreign.safetensors", "0" * 64)
        return store.add(task, path), BackboneMismatchError
    info, _ = publish(store, backbone, tmp_path, task, "vop", 99)
    _corrupt(store, info)
    return info, BlobIntegrityError


def _view(r: Retriever) -> tuple:
    """What an all-or-nothing failure must leave exactly as it was: the bank object and the digests."""
    return r.snapshot().bank, {task: info.digest for task, info in r.loaded.items()}


def _assert_serves(r_or_snap, files: dict, pix) -> None:
    """Every task in ``files`` serves exactly its file's prompts, in both towers."""
    from tests.test_runtime_mixed import oracle_video

    backbone = r_or_snap.backbone
    for task, path in files.items():
        torch.testing.assert_close(r_or_snap.encode_text(TEXTS, task=task), oracle_text(backbone, path, TEXTS),
                                   atol=ATOL, rtol=0)
        torch.testing.assert_close(r_or_snap.encode_video(pix, task=task), oracle_video(backbone, path, pix),
                                   atol=ATOL, rtol=0)


# --- all-or-nothing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["backbone", "corrupt"])
def test_refresh_switches_nothing_when_one_changed_task_fails(kind, tiny_backbone, store, retriever, tmp_path):
    """Three tasks' ``prod`` moved; the last one's new version cannot be prepared -> all three keep v1."""
    old = {}
    for seed, task in enumerate(["local/a", "local/b", "local/z"]):  # z is last in load order and by name
        info, old[task] = publish(store, tiny_backbone, tmp_path, task, "vop" if task != "local/b" else "vop-c", seed)
        store.tag(info.ref, "prod")
        retriever.load(f"{task}@prod")
    before = _view(retriever)
    for seed, task in enumerate(["local/a", "local/b"], start=10):  # two good moves ...
        info, _ = publish(store, tiny_backbone, tmp_path, task, "vop" if task != "local/b" else "vop-c", seed)
        store.tag(info.ref, "prod")
    bad, error = _bad_version(kind, store, tiny_backbone, tmp_path, "local/z")  # ... and one that fails
    store.tag(bad.ref, "prod")

    with pytest.raises(error):
        retriever.refresh()
    assert _view(retriever) == before  # the very same bank object: nothing switched, not even a or b
    _assert_serves(retriever, old, pixels(2, seed=1))

    store.tag("local/z@v1", "prod")  # with the failing move undone, the two good ones switch together
    changed = retriever.refresh()
    assert {t: i.number for t, i in changed.items()} == {"local/a": 2, "local/b": 2}
    assert retriever.loaded["local/z"].digest == before[1]["local/z"]


@pytest.mark.parametrize("kind", ["backbone", "corrupt", "missing"])
def test_load_many_loads_nothing_when_one_ref_fails(kind, tiny_backbone, store, retriever, tmp_path):
    from vopstore.errors import VersionNotFoundError

    files = {}
    for seed, task in enumerate(["local/keep", "local/a", "local/b", "local/z"]):
        _, files[task] = publish(store, tiny_backbone, tmp_path, task, "vop", seed)
    retriever.load("local/keep")
    # a load_many that would also replace a loaded task: that replacement must not happen either
    _, replacement = publish(store, tiny_backbone, tmp_path, "local/keep", "vop", 20)
    if kind == "missing":
        bad_ref, error = "local/z@v9", VersionNotFoundError
    else:
        bad, error = _bad_version(kind, store, tiny_backbone, tmp_path, "local/z")
        bad_ref = bad.ref
    before = _view(retriever)

    with pytest.raises(error):
        retriever.load_many(["local/a", "local/keep@v2", "local/b", bad_ref])  # the bad ref comes last
    assert _view(retriever) == before
    assert set(retriever.loaded) == {"local/keep"}
    _assert_serves(retriever, {"local/keep": files["local/keep"]}, pixels(2, seed=2))

    infos = retriever.load_many(["local/a", "local/keep@v2", "local/b"])  # the same without the bad ref: all of it
    assert [i.ref for i in infos] == ["local/a@v1", "local/keep@v2", "local/b@v1"]
    _assert_serves(retriever, {"local/a": files["local/a"], "local/b": files["local/b"], "local/keep": replacement},
                   pixels(2, seed=2))


# --- snapshots and slot reuse ------------------------------------------------------------------------------------


def _storage(r: Retriever, task: str):
    entry = r.snapshot().entry(task)
    return r._builder.storages[entry.group]


def test_a_held_snapshot_keeps_a_freed_slot_until_it_is_dropped(tiny_backbone, store, tmp_path):
    """Unload A while a snapshot reads it, load B of the same group: B must not be written into A's slot."""
    r = Retriever(tiny_backbone, store=store)
    files = {}
    for seed, task in enumerate(["local/a", "local/c", "local/b", "local/d", "local/e"]):
        _, files[task] = publish(store, tiny_backbone, tmp_path, task, "vop", seed)  # one (method, config) group
    r.load_many(["local/a", "local/c"])  # C keeps the group's storage alive after A goes
    storage = _storage(r, "local/a")
    assert storage.capacity == 2 and storage.free == []  # full: B's only free slot would be A's
    pix = pixels(3, seed=4)
    snap = r.snapshot()  # a request in flight
    a_slot = snap.entry("local/a").slot
    held_text = snap.encode_text(TEXTS, task="local/a")
    held_video = snap.encode_video(pix, task="local/a")
    _assert_serves(snap, {"local/a": files["local/a"]}, pix)

    r.unload("local/a")
    r.load("local/b")
    assert r.snapshot().entry("local/b").slot != a_slot  # not A's slot while the snapshot can read it
    torch.testing.assert_close(snap.encode_text(TEXTS, task="local/a"), held_text, atol=0, rtol=0)
    torch.testing.assert_close(snap.encode_video(pix, task="local/a"), held_video, atol=0, rtol=0)
    _assert_serves(snap, {"local/a": files["local/a"], "local/c": files["local/c"]}, pix)
    _assert_serves(r, {"local/b": files["local/b"], "local/c": files["local/c"]}, pix)

    del snap
    gc.collect()
    capacity = _storage(r, "local/b").capacity
    r.load_many(["local/d", "local/e"])  # now A's slot is free again: reused, the storage does not grow
    now = r.snapshot()
    assert a_slot in {now.entry(t).slot for t in ("local/d", "local/e")}
    assert _storage(r, "local/d").capacity == capacity
    _assert_serves(r, {t: files[t] for t in ("local/b", "local/c", "local/d", "local/e")}, pix)


def test_eviction_never_overwrites_what_a_held_snapshot_reads(tiny_backbone, store, tmp_path):
    """LRU churn (max_tasks=2) in one group while one snapshot is held: it keeps serving its two tasks."""
    r = Retriever(tiny_backbone, store=store, max_tasks=2)
    files = {}
    names = [f"local/t{i}" for i in range(8)]
    for seed, task in enumerate(names):
        _, files[task] = publish(store, tiny_backbone, tmp_path, task, "vop", seed)
    for task in names[:3]:  # warm up: a spare slot and a retired one, so later loads fit without growing
        r.load(task)
    gc.collect()
    snap = r.snapshot()
    pinned = {t: files[t] for t in snap.loaded}
    held = {t: snap.encode_text(TEXTS, task=t) for t in pinned}
    (key,) = snap.bank.groups
    in_place = 0  # loads that wrote into the very tensors the snapshot reads
    for task in names[3:]:  # each load evicts the least recently used task
        r.load(task)
        storage = r._builder.storages[key]
        in_place += all(storage.tensors[k] is v for k, v in snap.bank.groups[key].tensors.items())
        for t, expected in held.items():
            torch.testing.assert_close(snap.encode_text(TEXTS, task=t), expected, atol=0, rtol=0)
    _assert_serves(snap, pinned, pixels(2, seed=6))
    assert in_place >= 1  # not vacuous: some load really wrote into the storage this snapshot reads
    del snap
    gc.collect()


def test_readers_and_loaders_in_threads(tiny_backbone, store, tmp_path):
    """4 readers hold snapshots while 2 writers load, unload, evict and refresh; every result is exact.

    Each round: readers take a snapshot; all six pass a barrier; writers change the Retriever while
    readers encode with their snapshots; all pass a barrier; readers encode again with the same
    snapshot (after every change of the round) and drop it. Each result must equal the oracle of
    the version ``snap.loaded[task].digest`` names.
    """
    rounds, readers = 6, 4
    r = Retriever(tiny_backbone, store=store, max_tasks=3)
    oracle: dict[str, torch.Tensor] = {}  # digest -> expected text embeddings
    pool = [f"local/p{i}" for i in range(5)]
    for seed, task in enumerate(pool):
        info, path = publish(store, tiny_backbone, tmp_path, task, "vop", seed)
        oracle[info.digest] = oracle_text(tiny_backbone, path, TEXTS[:3])
    moving = []  # two versions of local/m; a writer flips its prod alias and refreshes
    for seed in (50, 51):
        info, path = publish(store, tiny_backbone, tmp_path, "local/m", "vop", seed)
        oracle[info.digest] = oracle_text(tiny_backbone, path, TEXTS[:3])
        moving.append(info)
    store.tag(moving[0].ref, "prod")
    r.load_many(["local/m@prod", pool[0], pool[1]])

    start, middle, end = (threading.Barrier(readers + 2) for _ in range(3))
    errors: list[BaseException] = []
    checked = [0] * readers

    def reader(k: int) -> None:
        for rnd in range(rounds):
            snap = r.snapshot()
            start.wait()
            tasks = sorted(snap.loaded)
            for phase in ("during", "after"):
                if phase == "after":
                    middle.wait()
                for i, task in enumerate(tasks):
                    if (i + k + rnd) % 2 and phase == "during":
                        continue
                    got = snap.encode_text(TEXTS[:3], task=task)
                    expected = oracle[snap.loaded[task].digest]
                    if not torch.allclose(got, expected, atol=ATOL, rtol=0):
                        raise AssertionError(f"reader {k} round {rnd} {phase}: {task} is not its version's prompts")
                    checked[k] += 1
            del snap
            end.wait()

    def loader() -> None:
        from vopstore.errors import NotFoundError

        for rnd in range(rounds):
            start.wait()
            for step in range(3):
                task = pool[(rnd * 3 + step) % len(pool)]
                if task in r.loaded and step == 2:
                    try:
                        r.unload(task)
                    except NotFoundError:  # evicted meanwhile by the other writer's load
                        pass
                else:
                    r.load(task)  # evicts the least recently used when three are loaded
            middle.wait()
            end.wait()

    def refresher() -> None:
        for rnd in range(rounds):
            start.wait()
            store.tag(moving[(rnd + 1) % 2].ref, "prod")
            if "local/m" in r.loaded:
                r.refresh()  # follows the moved alias (all-or-nothing, one swap)
            else:
                r.load("local/m@prod")  # evicted meanwhile: load it again
            r.load(pool[(rnd + 2) % len(pool)])
            middle.wait()
            end.wait()

    def guarded(fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - reported below; the barriers are released
                errors.append(exc)
                for barrier in (start, middle, end):
                    barrier.abort()
        return run

    threads = [threading.Thread(target=guarded(reader, k)) for k in range(readers)]
    threads += [threading.Thread(target=guarded(loader)), threading.Thread(target=guarded(refresher))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real:
        raise real[0]
    assert not errors
    assert all(n >= rounds for n in checked)
    gc.collect()
    for task, info in r.loaded.items():  # and the Retriever itself ends consistent
        torch.testing.assert_close(r.encode_text(TEXTS[:3], task=task), oracle[info.digest], atol=ATOL, rtol=0)
