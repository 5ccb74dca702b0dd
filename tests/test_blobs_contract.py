"""One contract for every blob backend (fsspec tests/abstract style): local folder, moto S3, SeaweedFS."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import pytest

from vopstore.blobs import BlobBackend, blob_key, open_blobs, read_verified, write_blob
from vopstore.blobs.s3 import S3Blobs, make_client
from vopstore.core import sha256_bytes
from vopstore.errors import BlobIntegrityError, BlobNotFoundError, InvalidRefError

MB = 1 << 20


@dataclass
class Harness:
    """A backend under test plus a way to change stored bytes behind its back."""

    backend: BlobBackend
    tamper: Callable[[str, bytes], None]


def _local(request, tmp_path) -> Harness:
    backend = open_blobs(f"file://{tmp_path / 'blobs'}")
    return Harness(backend, lambda key, data: backend.path(key).write_bytes(data))


_SHARED: dict[str, tuple[str, object]] = {}  # server name -> (bucket, backend client), built once


def _s3(env_fixture: str) -> Callable:
    def make(request, tmp_path) -> Harness:
        server = request.getfixturevalue(env_fixture)
        if server.name not in _SHARED:
            # Built while the fixture's environment is set, so the endpoint and credentials come
            # from boto3's standard configuration, as in production (test_blobs_factory covers open_blobs).
            _SHARED[server.name] = (server.create_bucket(), make_client())
        bucket, client = _SHARED[server.name]
        # One bucket per server, a fresh prefix per test: as isolated, and far cheaper on SeaweedFS.
        backend = S3Blobs(bucket, f"run/{uuid.uuid4().hex[:12]}", client=client)

        def tamper(key: str, data: bytes) -> None:
            server.client().put_object(Bucket=bucket, Key=backend.object_key(key), Body=data)

        return Harness(backend, tamper)

    return make


_MAKERS = {"local": _local, "moto": _s3("s3_env"), "seaweedfs": _s3("seaweed_env")}


@pytest.fixture(
    params=[
        "local",
        pytest.param("moto", marks=pytest.mark.s3),
        pytest.param("seaweedfs", marks=pytest.mark.s3),
    ]
)
def harness(request, tmp_path) -> Harness:
    return _MAKERS[request.param](request, tmp_path)


def _data(size: int, seed: int = 0) -> bytes:
    return (bytes([seed]) + os.urandom(size))[:size] if size else b""


def test_implements_protocol(harness):
    assert isinstance(harness.backend, BlobBackend)
    assert harness.backend.url.split("://")[0] in {"file", "s3"}


@pytest.mark.parametrize("size", [0, 1, 1 * MB])
def test_round_trip(harness, size):
    data = _data(size)
    digest = write_blob(harness.backend, "acme", data)
    assert digest == sha256_bytes(data)
    key = blob_key("acme", digest)
    assert harness.backend.exists(key)
    assert harness.backend.get(key) == data
    assert read_verified(harness.backend, "acme", digest) == data


def test_put_is_create_only(harness):
    backend, key = harness.backend, "acme/sha256/ab/first"
    assert backend.put(key, b"original") is True
    assert backend.put(key, b"something else") is False
    assert backend.get(key) == b"original"


def test_exists_and_delete(harness):
    backend, key = harness.backend, "acme/sha256/cd/blob"
    assert not backend.exists(key)
    backend.put(key, b"x")
    assert backend.exists(key)
    backend.delete(key)
    assert not backend.exists(key)
    backend.delete(key)  # deleting a missing key is not an error
    assert backend.put(key, b"y") is True  # and the key can be written again


def test_missing_key_is_lookup_error(harness):
    with pytest.raises(BlobNotFoundError) as info:
        harness.backend.get("acme/sha256/00/missing")
    assert isinstance(info.value, LookupError)
    assert "acme/sha256/00/missing" in str(info.value)


def test_list_with_prefixes(harness):
    backend = harness.backend
    keys = ["acme/sha256/0a/k1", "acme/sha256/0b/k2", "acme/sha256/1c/k3", "acme2/sha256/0a/k4", "beta/x/y"]
    for key in keys:
        backend.put(key, key.encode())
    assert list(backend.list()) == sorted(keys)
    assert list(backend.list("acme/")) == keys[:3]
    assert list(backend.list("acme/sha256/0")) == keys[:2]  # a prefix may end mid-segment
    assert list(backend.list("acme")) == keys[:4]
    assert list(backend.list("zeta/")) == []


def test_tenants_are_isolated(harness):
    backend, data = harness.backend, b"same bytes, two tenants"
    digest_a, digest_b = write_blob(backend, "acme", data), write_blob(backend, "beta", data)
    assert digest_a == digest_b
    key_a, key_b = blob_key("acme", digest_a), blob_key("beta", digest_b)
    assert key_a != key_b
    assert list(backend.list("beta/")) == [key_b]  # acme's blob is not visible under beta's prefix
    backend.delete(key_a)
    assert read_verified(backend, "beta", digest_b) == data
    with pytest.raises(BlobNotFoundError):
        read_verified(backend, "acme", digest_a)


def test_read_verified_detects_a_flipped_byte(harness):
    data = _data(4096, seed=7)
    digest = write_blob(harness.backend, "acme", data)
    key = blob_key("acme", digest)
    flipped = bytearray(data)
    flipped[1234] ^= 0x01
    harness.tamper(key, bytes(flipped))
    assert harness.backend.get(key) == bytes(flipped)  # the backend only moves bytes...
    with pytest.raises(BlobIntegrityError, match="corrupt"):
        read_verified(harness.backend, "acme", digest)  # ...the verified read refuses them


def test_concurrent_puts_leave_one_intact_object(harness):
    data = _data(256 * 1024, seed=3)
    key = blob_key("acme", sha256_bytes(data))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: harness.backend.put(key, data), range(8)))
    assert results.count(True) >= 1
    if harness.backend.url.startswith("file:"):
        assert results.count(True) == 1  # os.link makes exactly one writer win
    assert read_verified(harness.backend, "acme", sha256_bytes(data)) == data
    assert list(harness.backend.list("acme/")) == [key]


UNSAFE_KEYS = ["../x", "/abs/key", "a//b", "a/../b", "a/./b", "a b", "", "a/.tmp-1", "\u00fc/x", "a/", "a\\b"]


def test_unsafe_keys_are_refused(harness):
    for key in UNSAFE_KEYS:
        with pytest.raises(InvalidRefError):
            harness.backend.put(key, b"x")
        with pytest.raises(InvalidRefError):
            harness.backend.get(key)
        with pytest.raises(InvalidRefError):
            harness.backend.exists(key)
    with pytest.raises(InvalidRefError):
        list(harness.backend.list("../"))
    assert list(harness.backend.list()) == []
