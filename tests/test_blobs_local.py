"""The local-folder backend's own guarantees: atomic create-only writes, no temp files left or listed."""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from vopstore.blobs.local import LocalBlobs
from vopstore.errors import StoreUnavailableError

KEY = "acme/sha256/ab/blob"


def _files(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_blob_lives_at_its_key_and_no_temp_file_is_left(tmp_path):
    blobs = LocalBlobs(tmp_path)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: blobs.put(KEY, b"payload"), range(6)))
    assert results.count(True) == 1
    assert _files(tmp_path) == [KEY]
    assert (tmp_path / "acme/sha256/ab/blob").read_bytes() == b"payload"


def test_leftover_temp_files_are_not_listed_and_do_not_block(tmp_path):
    blobs = LocalBlobs(tmp_path)
    folder = tmp_path / "acme/sha256/ab"
    folder.mkdir(parents=True)
    (folder / ".tmp-deadbeef").write_bytes(b"half written by a crashed writer")
    assert list(blobs.list()) == []
    assert blobs.put(KEY, b"x") is True
    assert list(blobs.list()) == [KEY]


def test_write_failure_raises_store_error_and_cleans_up(tmp_path, monkeypatch):
    blobs = LocalBlobs(tmp_path)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StoreUnavailableError, match="No space left"):
        blobs.put(KEY, b"x")
    assert _files(tmp_path) == []
    assert not blobs.exists(KEY)


def test_falls_back_to_rename_without_hard_links(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    blobs = LocalBlobs(tmp_path)
    assert blobs.put(KEY, b"first") is True
    assert blobs.put(KEY, b"second") is False
    assert blobs.get(KEY) == b"first"
    assert _files(tmp_path) == [KEY]


def test_root_that_is_a_file_is_a_clear_error(tmp_path):
    root = tmp_path / "not-a-dir"
    root.write_text("oops")
    with pytest.raises(StoreUnavailableError, match="cannot write blob"):
        LocalBlobs(root).put(KEY, b"x")


def test_list_of_a_missing_root_is_empty(tmp_path):
    assert list(LocalBlobs(tmp_path / "never-created").list("acme/")) == []
