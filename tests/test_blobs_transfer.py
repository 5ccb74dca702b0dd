"""Big blobs on every backend (local folder, moto, SeaweedFS): streamed puts, multipart uploads that resume,
ranged reads, and verified downloads that resume from their part file and never show unverified bytes."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.test_blobs_contract import harness  # noqa: F401  (the backend fixture: local, moto, SeaweedFS)
from vopstore.blobs.base import blob_intact, blob_key, download_blob, open_blob_file
from vopstore.blobs.multipart import MIN_PART, plan_parts
from vopstore.blobs.s3 import S3Blobs
from vopstore.blobs.transfer import BlobFile, RangeIgnored, download_verified
from vopstore.errors import BlobIntegrityError, ConfigError, StoreUnavailableError

MB = 1 << 20
BIG = 12 * MB  # over two 5 MiB parts: three parts, the last one short


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """A 12 MiB file of random bytes and its sha256 (computed here with hashlib, not by the code under test)."""
    data = os.urandom(BIG)
    path = tmp_path_factory.mktemp("big") / "blob.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest(), data


class Killed(BaseException):
    """The process dies here (nothing in the library catches a BaseException)."""


def _small_parts(backend) -> None:
    if isinstance(backend, S3Blobs):
        backend.part_size = MIN_PART


def test_plan_parts_tiles_the_file_and_respects_s3_limits():
    parts = plan_parts(BIG, MIN_PART)
    assert [(p.number, p.offset, p.length) for p in parts] == [(1, 0, 5 * MB), (2, 5 * MB, 5 * MB),
                                                               (3, 10 * MB, 2 * MB)]
    huge = plan_parts(100_000 * MIN_PART, MIN_PART)  # would be 100,000 parts: grown to S3's 10,000
    assert len(huge) == 10_000 and sum(p.length for p in huge) == 100_000 * MIN_PART
    with pytest.raises(ConfigError, match="5 MiB"):
        plan_parts(BIG, MB)


def test_put_file_round_trips_a_big_blob_create_only(harness, big_file, tmp_path):
    path, digest, data = big_file
    backend, key = harness.backend, blob_key("acme", digest)
    _small_parts(backend)
    seen = []
    assert backend.put_file(key, path, progress=lambda done, total: seen.append((done, total))) is True
    assert seen[-1] == (BIG, BIG) and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert backend.put_file(key, path) is False  # create-only: the second put writes nothing
    other = tmp_path / "other.bin"
    other.write_bytes(b"x" * (6 * MB))
    assert backend.put_file(key, other) is False  # an existing key is never overwritten, whatever the file
    assert b"".join(backend.read_range(key)) == data
    assert b"".join(backend.read_range(key, 7 * MB + 3)) == data[7 * MB + 3:]
    assert list(backend.read_range(key, BIG)) == []
    assert blob_intact(backend, "acme", digest)
    if isinstance(backend, S3Blobs):  # nothing left pending in the bucket
        assert not backend.client.list_multipart_uploads(Bucket=backend.bucket).get("Uploads")


def test_download_is_verified_and_a_tampered_blob_leaves_nothing(harness, big_file, tmp_path):
    path, digest, data = big_file
    backend, key = harness.backend, blob_key("acme", digest)
    _small_parts(backend)
    backend.put_file(key, path)
    blob = download_blob(backend, "acme", digest, tmp_path / "ok" / digest, size=BIG)
    assert blob.path.read_bytes() == data and blob.digest == digest and blob.origin == backend.url
    flipped = bytearray(data)
    flipped[BIG - 5] ^= 0x01
    harness.tamper(key, bytes(flipped))
    dest = tmp_path / "bad" / digest
    with pytest.raises(BlobIntegrityError, match="corrupt"):
        download_blob(backend, "acme", digest, dest, size=BIG)
    assert list(dest.parent.iterdir()) == []  # neither the file nor its part
    with pytest.raises(BlobIntegrityError, match="corrupt"):
        with open_blob_file(backend, "acme", digest, size=BIG):
            pass
    assert not blob_intact(backend, "acme", digest)


class _CutAfter:
    """A chunk source over ``data`` that dies (like a killed process) after ``limit`` bytes; counts what it sent."""

    def __init__(self, data: bytes, limit: int | None, error: type[BaseException] = Killed) -> None:
        self.data, self.limit, self.error, self.sent, self.starts = data, limit, error, 0, []

    def __call__(self, start: int):
        self.starts.append(start)
        for offset in range(start, len(self.data), MB):
            chunk = self.data[offset: offset + MB]
            if self.limit is not None and self.sent + len(chunk) > self.limit:
                chunk = chunk[: self.limit - self.sent]
                self.sent += len(chunk)
                yield chunk
                self.limit = None  # dies once
                raise self.error()
            self.sent += len(chunk)
            yield chunk


def test_an_interrupted_download_resumes_with_only_the_missing_bytes(big_file, tmp_path):
    _, digest, data = big_file
    dest = tmp_path / "cache" / digest
    first = _CutAfter(data, limit=5 * MB + 123)
    with pytest.raises(Killed):
        download_verified(first, digest, dest, size=BIG)
    assert not dest.exists() and dest.with_name(dest.name + ".part").stat().st_size == 5 * MB + 123
    second = _CutAfter(data, limit=None)
    blob = download_verified(second, digest, dest, size=BIG)
    assert second.starts == [5 * MB + 123] and second.sent == BIG - (5 * MB + 123)  # only the rest moved
    assert blob.path.read_bytes() == data and not dest.with_name(dest.name + ".part").exists()


def test_a_dropped_connection_is_resumed_within_the_call(big_file, tmp_path):
    _, digest, data = big_file
    source = _CutAfter(data, limit=3 * MB, error=lambda: StoreUnavailableError("connection reset"))
    blob = download_verified(source, digest, tmp_path / digest, size=BIG)
    assert source.starts == [0, 3 * MB] and source.sent == BIG and blob.path.read_bytes() == data


def test_a_damaged_part_is_discarded_and_fetched_again(big_file, tmp_path):
    _, digest, data = big_file
    dest = tmp_path / digest
    dest.with_name(dest.name + ".part").write_bytes(b"\0" * MB)  # a part that does not hold the blob's first bytes
    source = _CutAfter(data, limit=None)
    assert download_verified(source, digest, dest, size=BIG).path.read_bytes() == data
    assert source.starts == [MB, 0]  # resumed first, then once more from the start


def test_a_source_that_cannot_send_a_range_restarts_the_part(big_file, tmp_path):
    _, digest, data = big_file
    dest = tmp_path / digest
    dest.with_name(dest.name + ".part").write_bytes(data[:MB])
    starts = []

    def whole_blob_only(start: int):
        starts.append(start)
        if start:
            raise RangeIgnored()
        yield from (data[i: i + MB] for i in range(0, len(data), MB))

    assert download_verified(whole_blob_only, digest, dest, size=BIG).path.read_bytes() == data
    assert starts == [MB, 0]


def test_a_source_sending_more_than_the_blob_is_refused(big_file, tmp_path):
    _, digest, data = big_file
    dest = tmp_path / digest
    with pytest.raises(BlobIntegrityError, match="do not hash"):
        download_verified(_CutAfter(data + b"\0" * (3 * MB), limit=None), digest, dest, size=BIG)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_downloads_of_one_digest_take_turns(big_file, tmp_path):
    _, digest, data = big_file
    sources = [_CutAfter(data, limit=None) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        blobs = list(pool.map(lambda s: download_verified(s, digest, tmp_path / digest, size=BIG), sources))
    assert all(b.path.read_bytes() == data for b in blobs)
    assert sum(s.sent for s in sources) == BIG  # one downloaded it; the others found it done
    assert sorted(p.name for p in tmp_path.iterdir()) == [digest]


def test_blob_file_hash_matches_hashlib(big_file):
    path, digest, _ = big_file
    assert BlobFile.hash(path) == BlobFile(path, digest, BIG)


# --- S3 multipart: resume and create-only ---------------------------------------------------------


@pytest.fixture(params=[pytest.param("moto", marks=pytest.mark.s3), pytest.param("seaweedfs", marks=pytest.mark.s3)])
def s3_harness(request, tmp_path):
    from tests.test_blobs_contract import _MAKERS

    made = _MAKERS[request.param](request, tmp_path)
    made.backend.part_size = MIN_PART
    return made


class _FailingPart:
    """Wraps the S3 client: the ``fail_at``-th upload_part call raises (a killed upload); counts the calls."""

    def __init__(self, client, fail_at: int | None) -> None:
        self._client, self.fail_at, self.calls, self._lock = client, fail_at, [], threading.Lock()

    def __getattr__(self, name):
        return getattr(self._client, name)

    def upload_part(self, **kwargs):
        with self._lock:
            self.calls.append(kwargs["PartNumber"])
            if self.fail_at is not None and len(self.calls) >= self.fail_at:
                raise Killed
        return self._client.upload_part(**kwargs)


def test_an_interrupted_multipart_upload_resumes_with_the_missing_parts(s3_harness, big_file, monkeypatch):
    path, digest, data = big_file
    backend, key = s3_harness.backend, blob_key("acme", digest)
    monkeypatch.setattr("vopstore.blobs.s3.UPLOAD_CONCURRENCY", 1)  # parts in order: the cut is deterministic
    real = backend.client
    backend.client = _FailingPart(real, fail_at=3)
    with pytest.raises(Killed):
        backend.put_file(key, path)
    assert not backend.exists(key)  # an unfinished upload is invisible
    backend.client = again = _FailingPart(real, fail_at=None)
    assert backend.put_file(key, path) is True
    assert again.calls == [3]  # parts 1 and 2 were already there
    assert b"".join(backend.read_range(key)) == data
    assert not real.list_multipart_uploads(Bucket=backend.bucket, Prefix=backend.object_key(key)).get("Uploads")


def test_a_held_part_with_other_bytes_is_sent_again(s3_harness, big_file, monkeypatch):
    path, digest, data = big_file
    backend, key = s3_harness.backend, blob_key("acme", digest)
    okey = backend.object_key(key)
    upload = backend.client.create_multipart_upload(Bucket=backend.bucket, Key=okey)["UploadId"]
    backend.client.upload_part(Bucket=backend.bucket, Key=okey, UploadId=upload, PartNumber=1, Body=b"z" * (5 * MB))
    backend.client = counting = _FailingPart(backend.client, fail_at=None)
    assert backend.put_file(key, path) is True
    assert sorted(counting.calls) == [1, 2, 3]
    assert hashlib.sha256(b"".join(backend.read_range(key))).hexdigest() == digest


def test_a_multipart_put_racing_a_finished_one_writes_nothing(s3_harness, big_file, tmp_path):
    path, digest, data = big_file
    backend, key = s3_harness.backend, blob_key("acme", digest)
    backend.client = client = _Sneaky(backend.client, backend.bucket, backend.object_key(key))
    assert backend.put_file(key, path) is False  # another writer created the key while the parts were going up
    assert client.sneaked and b"".join(backend.read_range(key)) == b"first writer"
    assert not client.list_multipart_uploads(Bucket=backend.bucket, Prefix=backend.object_key(key)).get("Uploads")


class _Sneaky(_FailingPart):
    """Creates the key with a plain PUT just before the upload is completed."""

    def __init__(self, client, bucket, okey) -> None:
        super().__init__(client, None)
        self.bucket, self.okey, self.sneaked = bucket, okey, False

    def complete_multipart_upload(self, **kwargs):
        self._client.put_object(Bucket=self.bucket, Key=self.okey, Body=b"first writer")
        self.sneaked = True
        return self._client.complete_multipart_upload(**kwargs)
