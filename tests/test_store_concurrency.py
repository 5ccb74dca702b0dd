"""Eight writer processes add versions to one task at once: numbers are 1..N, none lost or doubled."""

from __future__ import annotations

import sqlite3
import threading
import time

from tests.fixtures import preloaded
from tests.fixtures.stores import make_checkpoint

WRITERS, PER_WRITER = 8, 3

CHILD = """
import sys
from vopstore.store import open_store
url, blobs, files = sys.argv[1], sys.argv[2] or None, sys.argv[3:]
store = open_store(url, blobs=blobs)
print("ready", flush=True)
assert sys.stdin.readline() == "go\\n"  # blocks until the parent releases every writer at once
for f in files:
    print(store.add("shared", f).ref, flush=True)
"""


def test_concurrent_writers_get_consecutive_numbers(store_spec, tmp_path):
    files = [[str(make_checkpoint(tmp_path / f"w{w}-{i}.st", seed=100 * w + i)) for i in range(PER_WRITER)]
             for w in range(WRITERS)]
    # separate processes, forked from a server that has imported the store's libraries once
    procs = [preloaded.start(CHILD, store_spec.url, store_spec.blobs or "", *f) for f in files]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:  # all writers start together, so their transactions really overlap
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outputs += out.split()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    store = store_spec.open()
    versions = store.list_versions("shared")
    total = WRITERS * PER_WRITER
    assert [v.number for v in versions] == list(range(1, total + 1))
    assert sorted(outputs) == sorted(v.ref for v in versions)
    assert len({v.digest for v in versions}) == total
    assert store.verify() == []


def test_a_new_store_opens_while_another_process_holds_its_write_lock(tmp_path):
    """SQLite fails the switch to WAL at once (no busy wait) while another connection holds a
    write lock: openers of a new store that meet each other wait for the lock instead."""
    from vopstore.store import open_store

    folder = tmp_path / "store"
    folder.mkdir()
    holder = sqlite3.connect(folder / "store.db", isolation_level=None)  # a fresh file, rollback-journal mode
    holder.execute("BEGIN IMMEDIATE")
    opened: list = []

    def open_it():
        try:
            opened.append(open_store(folder.as_uri()))
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            opened.append(exc)

    opener = threading.Thread(target=open_it)
    opener.start()
    time.sleep(0.5)  # the opener meets the held lock
    holder.execute("COMMIT")
    holder.close()
    opener.join(timeout=60)
    store = opened[0]
    assert not isinstance(store, Exception), store
    assert store.add("shared", make_checkpoint(tmp_path / "a.st", seed=1)).number == 1
