"""Eight processes racing rm against tag, and gc(grace 0) against add: callers only ever see vopstore errors.

On PostgreSQL (READ COMMITTED) these races used to surface as a raw IndexError (rm) and a foreign-key
violation (gc). Each child counts the vopstore errors it got and fails on anything else; afterwards
the store must verify clean (no version without its blob).
"""

from __future__ import annotations

from tests.fixtures import preloaded
from tests.fixtures.stores import make_checkpoint

PROCS, ROUNDS = 8, 25

CHILD = """
import os, random, sys, time, traceback
from vopstore.errors import VopstoreError
from vopstore.store import open_store
url, blobs, go, role, seed, files = sys.argv[1], sys.argv[2] or None, sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6:]
rng = random.Random(seed)
store = open_store(url, blobs=blobs)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
errors = {}
for i in range(%d):
    try:
        if role == "tagger":
            store.tag(f"t@v{rng.randint(1, 6)}", rng.choice(["prod", "canary"]))
        elif role == "remover":
            store.remove(f"t@v{rng.randint(1, 6)}" if rng.random() < 0.7 else "t@prod", force=rng.random() < 0.5)
        elif role == "adder":
            info = store.add("g", files[i %% len(files)])
            if rng.random() < 0.5:
                store.remove(info.ref, force=True)
        elif role == "collector":
            store.gc(grace_s=0, force=True)
    except VopstoreError as exc:
        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    except Exception:
        traceback.print_exc()
        sys.exit(3)
print("errors", sorted(errors.items()), flush=True)
""" % ROUNDS


def _race(store_spec, tmp_path, roles, files=()):
    go = tmp_path / "go"
    # separate processes, forked from a server that has imported the store's libraries once
    procs = [preloaded.start(CHILD, store_spec.url, store_spec.blobs or "", go, role, n, *files)
             for n, role in enumerate(roles)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        go.touch()
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err  # a traceback here is an error outside vopstore.errors
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_remove_racing_tag(store_spec, tmp_path):
    store = store_spec.open()
    for seed in range(6):
        store.add("t", make_checkpoint(tmp_path / f"t{seed}.st", seed=seed))
    store.tag("t@v1", "prod")
    _race(store_spec, tmp_path, ["tagger", "remover"] * (PROCS // 2))
    store = store_spec.open()
    assert store.verify() == []
    for task in store.list_tasks():  # every alias points at a version that exists
        numbers = {v.number for v in store.list_versions(task.ref)}
        assert set(task.aliases.values()) <= numbers


def test_gc_without_grace_racing_add(store_spec, tmp_path):
    files = [str(make_checkpoint(tmp_path / f"g{seed}.st", seed=50 + seed)) for seed in range(4)]
    _race(store_spec, tmp_path, ["adder", "collector"] * (PROCS // 2), files)
    store = store_spec.open()
    assert store.verify() == []  # no version lost its blob
    for info in store.list_versions("g") if store.list_tasks() else []:
        assert store.read_blob(info)
