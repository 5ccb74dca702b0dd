"""kill -9 an add or a push at random points: afterwards verify is clean and no version lacks its blob."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

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
"""

PUSHER = """
import sys
from vopstore.store import open_store, push
src, dst = open_store(sys.argv[1]), open_store(sys.argv[2])
print("ready", flush=True)
for v in src.list_versions("t"):
    push(src, dst, v.ref)
"""


def _kill_at_random(args: list[str], rng: random.Random) -> bool:
    """Run a child and SIGKILL it at a random moment of its work; True if it was still working."""
    proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(rng.uniform(0.0, 0.2))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=30) == -signal.SIGKILL


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
    killed = 0
    for trial in range(TRIALS):
        killed += _kill_at_random([ADDER, url, *files[trial * 10:(trial + 1) * 10]], rng)
        _assert_consistent(open_store(url))
    assert killed >= TRIALS // 2, "most children must die mid-work, or the test proves nothing"
    numbers = [v.number for v in open_store(url).list_versions("t")] if open_store(url).list_tasks() else []
    assert numbers == list(range(1, len(numbers) + 1))  # killed adds leave no gaps or duplicates


@pytest.mark.slow
def test_kill_during_push(tmp_path):
    rng = random.Random(11)
    src_url, dst_url = (tmp_path / "src").as_uri(), (tmp_path / "dst").as_uri()
    src = open_store(src_url)
    for i in range(40):
        src.add("t", make_checkpoint(tmp_path / f"f{i}.st", seed=i))
    killed = 0
    for _ in range(TRIALS):
        killed += _kill_at_random([PUSHER, src_url, dst_url], rng)
        _assert_consistent(open_store(dst_url))
    assert killed >= TRIALS // 2, "most children must die mid-work, or the test proves nothing"
    dst = open_store(dst_url)
    for info in src.list_versions("t"):  # finishing the interrupted pushes afterwards just works
        copy_version(src, dst, info.ref)
    assert [(v.number, v.digest) for v in dst.list_versions("t")] == [(v.number, v.digest)
                                                                        for v in src.list_versions("t")]
