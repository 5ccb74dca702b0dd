"""push / pull of big versions (a 12 MiB prompt set; 5 MiB S3 parts): multipart to S3, streamed through the
registry server both ways, verified, resumed after an interruption with only the missing bytes moving, and
hashed once on the way in."""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest

from tests.fixtures.registry_server import Tenant, start_server
from tests.fixtures.stores import checkpoint_bytes
from tests.test_blobs_transfer import Killed, _FailingPart
from vopstore.blobs.base import blob_key
from vopstore.blobs.multipart import MIN_PART
from vopstore.blobs.s3 import S3Blobs
from vopstore.errors import BlobIntegrityError, QuotaExceededError, TaskNotFoundError
from vopstore.store import open_store, pull, push
from vopstore.store.http import HttpRegistry

MB = 1 << 20
PARAMS = 3 << 20  # float32 values: a 12 MiB file, three 5 MiB parts
CUT = 5 * MB + 4321  # where an interrupted transfer stops


@pytest.fixture(scope="module")
def big():
    """The bytes of a valid 12 MiB prompt set and their sha256 (hashlib here, not the code under test)."""
    data = checkpoint_bytes(7, PARAMS)
    return data, hashlib.sha256(data).hexdigest()


@pytest.fixture
def big_file(big, tmp_path):
    path = tmp_path / "big.safetensors"
    path.write_bytes(big[0])
    return path


@pytest.fixture
def hashed(monkeypatch) -> list[int]:
    """Every byte this process feeds to sha256 from now on, as a list of counts per hasher."""
    real, counts = hashlib.sha256, []

    class Counting:
        def __init__(self, data: bytes = b"", **kwargs) -> None:
            self._hash, self._slot = real(**kwargs), len(counts)
            counts.append(0)
            self.update(data)

        def update(self, data) -> None:
            counts[self._slot] += memoryview(data).nbytes
            self._hash.update(data)

        def hexdigest(self) -> str:
            return self._hash.hexdigest()

    monkeypatch.setattr(hashlib, "sha256", Counting)
    return counts


def _one_pass(counts: list[int], size: int) -> None:
    """Exactly one hasher saw the blob, once; the others only small records (manifests, ids)."""
    assert sum(1 for n in counts if n >= size) == 1 and max(counts) == size, counts
    assert sum(counts) - size < 64 * 1024, counts


# --- hashed once ----------------------------------------------------------------------------------------------


def test_push_and_pull_between_directory_stores_hash_the_blob_once(big, big_file, tmp_path, hashed):
    data, digest = big
    origin = open_store((tmp_path / "origin").as_uri())
    origin.add("t", big_file)
    remote = open_store((tmp_path / "remote").as_uri())
    hashed.clear()
    push(origin, remote, "t@v1")  # the origin's blob hashed in place, copied into the remote as it is
    _one_pass(hashed, len(data))
    local = open_store((tmp_path / "local").as_uri())
    hashed.clear()
    info = pull(remote, local, "t@v1")
    _one_pass(hashed, len(data))
    assert local.cache.path(digest, info.tenant).read_bytes() == data  # in the cache without a read-back
    assert local.blobs.path(blob_key(info.tenant, digest)).read_bytes() == data


@pytest.mark.postgres
@pytest.mark.s3
def test_a_pull_through_the_registry_hashes_once(registry_server, new_tenant, big, big_file, tmp_path, hashed):
    data, digest = big
    tenant = new_tenant()
    tenant.client("write").add("big", big_file)
    local = open_store((tmp_path / "local").as_uri())
    hashed.clear()
    info = pull(tenant.client("read"), local, f"{tenant.name}/big@v1")
    _one_pass(hashed, len(data))
    assert local.cache.path(digest, info.tenant).read_bytes() == data
    assert local.verify() == []


# --- S3: multipart up, ranged and resumed down ---------------------------------------------------------------


@pytest.fixture
def s3_remote(postgres_store_db, s3_bucket, monkeypatch):
    monkeypatch.setenv("VOPSTORE_S3_PART_SIZE", str(MIN_PART))
    remote = open_store(postgres_store_db, blobs=f"s3://{s3_bucket}/vop")
    assert isinstance(remote.blobs, S3Blobs) and remote.blobs.part_size == MIN_PART
    yield remote
    remote.close()


@pytest.mark.postgres
@pytest.mark.s3
def test_a_big_push_to_s3_is_a_multipart_upload_and_pulls_back_verified(s3_remote, s3_env, s3_bucket, big, big_file,
                                                                        tmp_path):
    data, digest = big
    local = open_store()
    info = local.add("t", big_file)
    push(local, s3_remote, "t@v1")
    head = s3_env.client().head_object(Bucket=s3_bucket, Key=f"vop/{blob_key(info.tenant, digest)}")
    assert head["ETag"].endswith('-3"') and head["ContentLength"] == len(data)  # S3 names a 3-part upload so
    assert s3_remote.verify() == []
    fresh = open_store((tmp_path / "fresh").as_uri())
    assert pull(s3_remote, fresh, "t@v1").digest == digest
    assert fresh.fetch("t@v1").read_bytes() == data


@pytest.mark.postgres
@pytest.mark.s3
def test_an_interrupted_push_to_s3_resumes_with_the_missing_parts(s3_remote, big_file, monkeypatch):
    monkeypatch.setattr("vopstore.blobs.s3.UPLOAD_CONCURRENCY", 1)  # parts in order: a deterministic cut
    local = open_store()
    local.add("t", big_file)
    backend, real = s3_remote.blobs, s3_remote.blobs.client
    backend.client = _FailingPart(real, fail_at=3)  # dies sending the third part
    with pytest.raises(Killed):
        push(local, s3_remote, "t@v1")
    with pytest.raises(TaskNotFoundError):  # nothing visible
        s3_remote.resolve("t")
    backend.client = again = _FailingPart(real, fail_at=None)
    push(local, s3_remote, "t@v1")
    assert again.calls == [3] and s3_remote.verify() == []


class _CutBlobs:
    """A blob backend whose reads die (``Killed``) after ``cut`` bytes; counts the bytes it served."""

    def __init__(self, backend, cut: int | None) -> None:
        self.backend, self.cut, self.served = backend, cut, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def read_range(self, key: str, start: int = 0):
        for chunk in self.backend.read_range(key, start):
            if self.cut is not None and self.served + len(chunk) >= self.cut:
                chunk, self.cut = chunk[: self.cut - self.served], None
                self.served += len(chunk)
                yield chunk
                raise Killed()
            self.served += len(chunk)
            yield chunk


@pytest.mark.postgres
@pytest.mark.s3
def test_an_interrupted_pull_from_s3_resumes_with_the_remaining_bytes(s3_remote, big, big_file, tmp_path):
    data, digest = big
    s3_remote.add("t", big_file)
    raw, local = s3_remote.blobs, open_store((tmp_path / "local").as_uri())
    s3_remote.blobs = _CutBlobs(raw, CUT)
    with pytest.raises(Killed):
        pull(s3_remote, local, "t@v1")
    part = local.cache.path(digest, "local").with_name(f"{digest}.safetensors.part")
    assert part.stat().st_size == CUT
    s3_remote.blobs = meter = _CutBlobs(raw, None)
    pull(s3_remote, local, "t@v1")
    assert meter.served == len(data) - CUT  # only the rest moved
    assert not part.exists() and local.fetch("t@v1").read_bytes() == data and local.verify() == []


# --- through a registry server --------------------------------------------------------------------------------


class _Meter(httpx.HTTPTransport):
    """Counts the blob bytes that come back (from the server or a presigned S3 URL); dies after ``cut`` of them."""

    def __init__(self, cut: int | None = None) -> None:
        super().__init__()
        self.cut, self.received, self.ranges = cut, 0, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method != "GET" or not (request.url.path.endswith("/blob") or "/v1/" not in request.url.path):
            return response
        self.ranges.append(request.headers.get("range"))
        return httpx.Response(response.status_code, headers=response.headers, stream=_Metered(response.stream, self),
                              extensions=response.extensions, request=request)


class _Metered(httpx.SyncByteStream):
    def __init__(self, inner, meter: _Meter) -> None:
        self.inner, self.meter = inner, meter

    def __iter__(self):
        meter = self.meter
        for chunk in self.inner:
            if meter.cut is not None and meter.received + len(chunk) >= meter.cut:
                chunk, meter.cut = chunk[: meter.cut - meter.received], None
                meter.received += len(chunk)
                yield chunk
                raise Killed()
            meter.received += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


def _interrupted_then_resumed(tenant: Tenant, ref: str, local, data: bytes) -> None:
    with pytest.raises(Killed):
        pull(HttpRegistry(tenant.url, tenant.tokens["read"], retries=1, transport=_Meter(CUT)), local, ref)
    part = local.cache.path(hashlib.sha256(data).hexdigest(), tenant.name).with_suffix(".safetensors.part")
    held = part.stat().st_size  # what reached the disk before the cut (the client buffers up to 1 MiB)
    assert CUT - MB <= held <= CUT and part.read_bytes() == data[:held]
    meter = _Meter()
    pull(HttpRegistry(tenant.url, tenant.tokens["read"], retries=1, transport=meter), local, ref)
    assert meter.received == len(data) - held and set(meter.ranges) == {f"bytes={held}-"}  # only the rest
    assert not part.exists() and local.fetch(ref).read_bytes() == data and local.verify() == []


@pytest.mark.postgres
@pytest.mark.s3
def test_an_interrupted_pull_through_presigned_urls_resumes(registry_server, new_tenant, big, big_file, tmp_path):
    data = big[0]
    tenant = new_tenant()
    tenant.client("write").add("big", big_file)
    _interrupted_then_resumed(tenant, f"{tenant.name}/big@v1", open_store((tmp_path / "local").as_uri()), data)


@pytest.fixture(scope="module")
def streaming(tmp_path_factory):
    """A registry on a directory store (downloads streamed by the server itself) that takes uploads up to 16 MiB."""
    folder = tmp_path_factory.mktemp("streaming-registry")
    open_store(str(folder / "store")).close()
    server = start_server(str(folder / "store"), None, {}, folder, "--max-upload", "16MiB")
    yield server
    server.stop()


@pytest.fixture
def streaming_tenant(streaming) -> Tenant:
    admin = open_store(streaming.db)
    name = f"s{uuid.uuid4().hex[:10]}"
    tokens = {scope: admin.create_token(name, scope, scope) for scope in ("read", "write", "admin")}
    admin.close()
    return Tenant(name, tokens, streaming.url)


def test_a_big_push_streams_through_the_server_and_a_pull_resumes_by_range(streaming_tenant, big, big_file, tmp_path):
    data = big[0]
    tenant, local = streaming_tenant, open_store()
    local.add(f"{streaming_tenant.name}/big", big_file)
    push(local, tenant.client("write"), f"{tenant.name}/big@v1")
    _interrupted_then_resumed(tenant, f"{tenant.name}/big@v1", open_store((tmp_path / "fresh").as_uri()), data)
    url, headers = f"{tenant.url}/v1/tenants/{tenant.name}/tasks/big/versions/v1/blob", tenant.headers("read")
    tail = httpx.get(url, headers={**headers, "Range": f"bytes={len(data) - 1000}-"}, timeout=30)
    assert tail.status_code == 206 and tail.content == data[-1000:]
    assert tail.headers["content-range"] == f"bytes {len(data) - 1000}-{len(data) - 1}/{len(data)}"
    assert httpx.get(url, headers={**headers, "Range": f"bytes={len(data)}-"}, timeout=30).status_code == 416
    closed = httpx.get(url, headers={**headers, "Range": "bytes=0-99"}, timeout=30)  # not supported: the whole file
    assert closed.status_code == 200 and closed.content == data
    too_big = tmp_path / "too-big.safetensors"
    too_big.write_bytes(checkpoint_bytes(8, 5 << 20))  # 20 MiB: over the server's limit
    with pytest.raises(QuotaExceededError):
        tenant.client("write").add("bigger", too_big)


def test_a_corrupt_blob_on_the_server_is_cut_short_and_nothing_is_left(streaming, streaming_tenant, big, big_file,
                                                                      tmp_path):
    data, digest = big
    tenant = streaming_tenant
    tenant.client("write").add("big", big_file)
    stored = open_store(streaming.db).blobs.path(blob_key(tenant.name, digest))
    stored.chmod(0o644)
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(httpx.RemoteProtocolError):  # the body breaks off one chunk short: never taken as whole
        httpx.get(f"{tenant.url}/v1/tenants/{tenant.name}/tasks/big/versions/v1/blob", headers=tenant.headers("read"),
                  timeout=30)
    fresh = open_store((tmp_path / "fresh").as_uri())
    with pytest.raises(BlobIntegrityError):
        pull(tenant.client("read"), fresh, f"{tenant.name}/big@v1")
    with pytest.raises(TaskNotFoundError):
        fresh.resolve(f"{tenant.name}/big")
    assert not [p for p in fresh.cache.root.rglob("*") if p.is_file()]  # neither a file nor a part
