"""kill -9 an add or a push at seeded points of its work: afterwards verify is clean and no version lacks its blob.

Each child reports every finished operation on stdout and, once all are done, waits for
stdin to close, so the parent kills it right after a seeded number of finished operations
while the next one is under way: the kill always lands mid-work, on any machine speed.
"""

from __future__ import annotations

import os
import random
import signal

import pytest

from tests.fixtures import preloaded
from tests.fixtures.stores import make_checkpoint
from vopstore.store import copy_version, open_store

TRIALS = 10  # per operation; 20 kills in all

ADDER = """
import sys
from vopstore.store import open_store
store = open_store(sys.argv[1])
print("ready", flush=True)
for f in sys.argv[2:]:
    store.add("t", f)
    print("done", flush=True)
print("finished", flush=True)
sys.stdin.read()
"""

PUSHER = """
import sys
from vopstore.store import open_store, push
src, dst = open_store(sys.argv[1]), open_store(sys.argv[2])
print("ready", flush=True)
for v in src.list_versions("t"):
    push(src, dst, v.ref)
    print("done", flush=True)
print("finished", flush=True)
sys.stdin.read()
"""


def _kill_after(args: list[str], finished_ops: int) -> None:
    """Run a child and SIGKILL it as soon as it reports ``finished_ops`` operations done (the next is running)."""
    proc = preloaded.start(*args)  # its own process, forked from a server with the store's imports done
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for _ in range(finished_ops):
            assert proc.stdout.readline().strip() == "done", proc.stderr.read()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == -signal.SIGKILL
    # At least two operations were left after the kill point: the child cannot have run them all
    # between its last report and the signal (they take milliseconds; the kill microseconds).
    assert "finished" not in rest, "the child finished before the kill: it proves nothing"


def _assert_consistent(store) -> None:
    assert store.verify() == []
    for task in store.list_tasks():
        for info in store.list_versions(task.ref):
            assert store.read_blob(info)  # every visible version has its bytes
    store.gc(grace_s=0)  # collecting the orphans of killed writers must not hurt any version
    assert store.verify() == []


@pytest.mark.slow
def test_kill_during_add(tmp_path):
    rng = random.Random(7)
    url = (tmp_path / "store").as_uri()
    files = [str(make_checkpoint(tmp_path / f"f{i}.st", seed=i)) for i in range(10 * TRIALS)]
    before = 0
    for trial in range(TRIALS):
        done = rng.randrange(0, 9)  # of 10 adds: at least two are left when the kill lands
        _kill_after([ADDER, url, *files[trial * 10:(trial + 1) * 10]], done)
        store = open_store(url)
        _assert_consistent(store)
        after = len(store.list_versions("t")) if store.list_tasks() else 0
        # every add that returned is there; the one killed is there wholly or not at all
        assert before + done <= after <= before + done + 1
        before = after
    numbers = [v.number for v in open_store(url).list_versions("t")] if open_store(url).list_tasks() else []
    assert numbers == list(range(1, len(numbers) + 1))  # killed adds leave no gaps or duplicates


@pytest.mark.slow
def test_kill_during_push(tmp_path):
    rng = random.Random(11)
    src_url, dst_url = (tmp_path / "src").as_uri(), (tmp_path / "dst").as_uri()
    src = open_store(src_url)
    for i in range(40):
        src.add("t", make_checkpoint(tmp_path / f"f{i}.st", seed=i))
    pushed = 0
    for _ in range(TRIALS):
        # each round pushes what is left (earlier versions are no-ops): kill after a few new copies
        done = rng.randrange(0, 3)
        _kill_after([PUSHER, src_url, dst_url], pushed + done)
        dst = open_store(dst_url)
        _assert_consistent(dst)
        there = len(dst.list_versions("t")) if dst.list_tasks() else 0
        assert pushed + done <= there <= pushed + done + 1  # every push that returned is there
        pushed = there
    dst = open_store(dst_url)
    for info in src.list_versions("t"):  # finishing the interrupted pushes afterwards just works
        copy_version(src, dst, info.ref)
    assert [(v.number, v.digest) for v in dst.list_versions("t")] == [(v.number, v.digest)
                                                                        for v in src.list_versions("t")]
