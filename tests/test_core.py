"""The core helpers: canonical JSON and short digests, sha256 checks, atomic writes, retries, the default device."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import pytest

from vopstore import core
from vopstore.core import (atomic_write, atomic_write_bytes, canonical_json, retry, sha256_bytes, sha256_file,
                           short_digest)


def test_canonical_json_sorts_keys_and_drops_whitespace():
    assert canonical_json({"b": 1, "a": [1, 2], "é": "ü"}) == '{"a":[1,2],"b":1,"é":"ü"}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})  # NaN is not JSON: refused, never written


def test_short_digest_is_twelve_hex_of_the_canonical_json_whatever_the_key_order():
    expected = hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()[:12]  # the canonical text written by hand
    assert short_digest({"b": 1, "a": [1, 2]}) == short_digest({"a": [1, 2], "b": 1}) == expected
    assert short_digest({"a": [1, 2], "b": 2}) != expected


def test_sha256_of_bytes_and_file_agree_with_hashlib(tmp_path):
    data = os.urandom(3 << 20)  # over the 1 MiB read chunk
    (tmp_path / "f").write_bytes(data)
    assert sha256_bytes(data) == sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_atomic_write_gives_the_mode_a_plain_open_gives(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f.safetensors", b"x")
        atomic_write_bytes(tmp_path / "private", b"x", mode=0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "f.safetensors").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0o600
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.safetensors", "private"]


def test_validate_digest_is_the_one_sha256_check():
    from vopstore.blobs.base import blob_key
    from vopstore.core import validate_digest
    from vopstore.errors import BlobIntegrityError
    from vopstore.store.cache import BlobCache

    assert validate_digest("0f" * 32) == "0f" * 32
    for bad in ("0F" * 32, "0f" * 31, "0f" * 33, "zz" * 32, "", None):
        with pytest.raises(BlobIntegrityError, match="invalid sha256 digest"):
            validate_digest(bad)
        with pytest.raises(ValueError, match="invalid sha256 digest"):
            blob_key("acme", bad)
        with pytest.raises(BlobIntegrityError, match="invalid sha256 digest"):
            BlobCache("/nonexistent").path(bad)


def test_atomic_write_fsyncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(core.os, "fsync", recording_fsync)
    atomic_write_bytes(tmp_path / "sub" / "f.json", b"{}")
    assert synced == ["file", "folder"]
    assert (tmp_path / "sub" / "f.json").read_bytes() == b"{}"
    with atomic_write(tmp_path / "cache.npy", durable=False) as tmp:  # a cache: a torn file is only a miss
        tmp.write_bytes(b"frames")
    assert synced == ["file", "folder"] and (tmp_path / "cache.npy").read_bytes() == b"frames"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.npy"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.npy"]


def test_atomic_write_hides_the_temporary_and_keeps_the_suffix_only_when_asked(tmp_path):
    with atomic_write(tmp_path / "clip.mp4") as plain:
        assert plain.parent == tmp_path and plain.name.startswith(".clip.mp4.") and plain.name.endswith(".tmp")
        plain.write_bytes(b"a")
    with atomic_write(tmp_path / "clip.mp4", keep_suffix=True) as suffixed:
        assert suffixed.name.startswith(".clip.mp4.") and suffixed.name.endswith(".tmp.mp4")
        suffixed.write_bytes(b"b")
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"] and (tmp_path / "clip.mp4").read_bytes() == b"b"


class _Flaky:
    """Raises ``errors`` in turn, then returns "done"."""

    def __init__(self, *errors: Exception):
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_retry_calls_again_while_the_error_is_accepted_and_waits_between(monkeypatch):
    slept = []
    monkeypatch.setattr(core.time, "sleep", slept.append)
    call = _Flaky(KeyError("a"), KeyError("b"))
    assert retry(call, attempts=3, when=lambda e: isinstance(e, KeyError), wait=lambda n: 0.1 * 2**n) == "done"
    assert call.calls == 3 and slept == [0.1, 0.2]


def test_retry_lets_a_refused_error_and_the_last_error_through(monkeypatch):
    monkeypatch.setattr(core.time, "sleep", lambda s: None)
    refused = _Flaky(ValueError("not this one"))
    with pytest.raises(ValueError, match="not this one"):
        retry(refused, attempts=5, when=lambda e: isinstance(e, KeyError))
    assert refused.calls == 1
    exhausted = _Flaky(KeyError("1"), KeyError("2"), KeyError("3"))
    with pytest.raises(KeyError, match="3"):
        retry(exhausted, attempts=3, when=lambda e: isinstance(e, KeyError))
    assert exhausted.calls == 3


def test_default_device_is_the_gpu_when_there_is_one(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert core.default_device() == core.default_device(3) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert (core.default_device(), core.default_device(3)) == ("cuda", "cuda:3")


def test_the_core_imports_only_the_standard_library_and_the_errors():
    code = ("import sys; before = set(sys.modules); import vopstore.core; "
            "print(*sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in sys.stdlib_module_names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["vopstore", "vopstore.core", "vopstore.errors"]
