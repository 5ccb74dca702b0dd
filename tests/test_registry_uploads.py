"""Uploads are never trusted, names are checked, tokens are rate-limited, and a killed server loses nothing.

A second real server for this module (one worker on a directory store, a 4 KiB
upload limit and a low rate limit), so the limits can be hit without slowing
the session's server. Resumable uploads (PATCH in chunks, GET where one stands)
are checked there for their rules, and through the session's 2-worker server for
pushes whose connection is really cut mid-upload.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fixtures.registry_server import Tenant, start_server
from tests.fixtures.stores import checkpoint_bytes
from vopstore.core import sha256_bytes
from vopstore.errors import QuotaExceededError, StoreUnavailableError, TaskNotFoundError
from vopstore.store import open_store, pull, push
from vopstore.store.http import HttpRegistry

GOOD = checkpoint_bytes(5)
LIMIT = 4096


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small-registry")
    store = folder / "store"
    open_store(str(store)).close()
    server = start_server(str(store), None, {}, folder, "--max-upload", "4KiB", "--rate", "5", "--burst", "20")
    yield server
    server.stop()


@pytest.fixture
def tenant(small):
    import uuid

    admin = open_store(small.db)
    name = f"u{uuid.uuid4().hex[:10]}"
    tokens = {scope: admin.create_token(name, scope, scope) for scope in ("read", "write", "admin")}
    admin.close()
    return Tenant(name, tokens, small.url)


def _put(server, tenant, digest, **kwargs) -> httpx.Response:
    headers = {**tenant.headers("write"), "Content-Type": "application/octet-stream", **kwargs.pop("headers", {})}
    return httpx.put(f"{server.url}/v1/tenants/{tenant.name}/blobs/{digest}", headers=headers, timeout=30, **kwargs)


def _nothing_stored(server, tenant) -> None:
    reg = open_store(server.db, tenant.name)
    assert reg.list_tasks() == [] and reg.gc(grace_s=0, dry_run=True) == 0
    reg.close()


def test_oversized_uploads_are_refused_before_they_are_stored(small, tenant):
    big = GOOD + b"\0" * LIMIT
    response = _put(small, tenant, sha256_bytes(big), content=big)
    assert response.status_code == 413 and response.json()["code"] == "quota_exceeded"
    streamed = _put(small, tenant, sha256_bytes(big), content=iter([big[:3000], big[3000:]]))  # chunked: no length
    assert streamed.status_code == 413
    _nothing_stored(small, tenant)


def test_a_body_that_does_not_match_its_digest_or_is_no_checkpoint_is_refused(small, tenant):
    response = _put(small, tenant, sha256_bytes(GOOD), content=GOOD[:-1] + b"!")
    assert response.status_code == 422 and response.json()["code"] == "integrity"
    junk = b"not a prompt set" * 10
    response = _put(small, tenant, sha256_bytes(junk), content=junk)
    assert response.status_code == 422 and response.json()["code"] == "invalid_checkpoint"
    response = _put(small, tenant, "abc", content=GOOD)
    assert response.status_code == 422
    _nothing_stored(small, tenant)


def _send_half(server, tenant, data: bytes) -> socket.socket:
    """Start an upload whose body stops halfway (the connection stays open)."""
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    sock = socket.create_connection((host, port))
    head = (f"PUT /v1/tenants/{tenant.name}/blobs/{sha256_bytes(data)} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {tenant.tokens['write']}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    sock.sendall(head + data[: len(data) // 2])
    return sock


def test_a_truncated_upload_stores_nothing(small, tenant):
    sock = _send_half(small, tenant, GOOD)
    time.sleep(0.3)
    sock.close()  # the client goes away mid-body
    time.sleep(0.3)
    reg = tenant.client("write")
    body = {"digest": sha256_bytes(GOOD)}
    response = httpx.post(f"{small.url}/v1/tenants/{tenant.name}/tasks/t/versions", json=body,
                          headers=tenant.headers("write"))
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert reg.list_tasks() == []
    _nothing_stored(small, tenant)


@pytest.mark.parametrize("task", ["..", "UPPER", "t%C3%A2che", "x" * 300, "a@v1", "%2e%2e", "-lead"])
def test_bad_names_are_one_clear_error_and_change_nothing(small, tenant, task):
    for method, path, body in [("GET", f"tasks/{task}/versions", None), ("POST", f"tasks/{task}/versions",
                               {"digest": sha256_bytes(GOOD)}), ("PUT", f"tasks/{task}/aliases/prod", {"target": "v1"}),
                               ("PUT", "tasks/t/aliases/" + task, {"target": "v1"})]:
        response = httpx.request(method, f"{small.url}/v1/tenants/{tenant.name}/{path}", json=body,
                                 headers=tenant.headers("admin"))
        assert response.status_code in (404, 422), (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "\n" not in response.json()["detail"]
    _nothing_stored(small, tenant)


def test_rate_limit_answers_429_with_retry_after_and_the_client_waits(small, tenant):
    statuses, retry_after = [], None
    with httpx.Client(base_url=small.url, headers=tenant.headers("read")) as http:
        for _ in range(40):
            response = http.get("/v1/whoami")
            statuses.append(response.status_code)
            if response.status_code == 429:
                retry_after = response.headers["Retry-After"]
    assert statuses[:20] == [200] * 20 and 429 in statuses  # the burst, then the limit
    assert retry_after is not None and int(retry_after) >= 1
    other = tenant.client("write")  # another token has its own bucket
    assert other.list_tasks() == []
    patient = HttpRegistry(small.url, tenant.tokens["read"], retries=4)
    assert patient.list_tasks() == []  # retried after Retry-After


def test_a_server_killed_mid_push_leaves_no_version_and_no_stuck_lock(small, tenant, ckpt):
    reg = tenant.client("admin")
    reg.add("t", ckpt(1))
    sock = _send_half(small, tenant, checkpoint_bytes(2))
    time.sleep(0.3)
    small.stop(signal.SIGKILL)  # the server dies with an upload half-read
    sock.close()
    staged = checkpoint_bytes(3)  # and a push whose bytes arrived but whose version row never came
    restarted = small.restart()
    try:
        assert _put(restarted, tenant, sha256_bytes(staged), content=staged).status_code == 201
        restarted.stop(signal.SIGKILL)
        restarted = restarted.restart()
        reg = HttpRegistry(restarted.url, tenant.tokens["admin"])
        assert [v.number for v in reg.list_versions("t")] == [1]
        started = time.monotonic()
        assert reg.add("t", ckpt(4)).number == 2  # no lock left behind: the next write goes straight through
        assert time.monotonic() - started < 5
        assert reg.verify() == []
    finally:
        small.__dict__.update(restarted.__dict__)  # the module's fixture stops whichever process is current


# --- resumable uploads: PATCH .../blobs/{digest}/upload in chunks, GET where it stands ---------------------------

MID = checkpoint_bytes(6, 500)  # 2.5 KB: chunks of it fit under the module server's 4 KiB limit


def _upload_url(server, tenant_name: str, digest: str) -> str:
    return f"{server.url}/v1/tenants/{tenant_name}/blobs/{digest}/upload"


def _patch(server, tenant, digest, offset: int, content, length: int, *, owner: str | None = None,
           **headers) -> httpx.Response:
    sent = {**tenant.headers("write"), "Content-Type": "application/octet-stream", "Upload-Offset": str(offset),
            "Upload-Length": str(length), **headers}
    return httpx.patch(_upload_url(server, owner or tenant.name, digest), headers=sent, content=content, timeout=30)


def _state(server, tenant, digest, owner: str | None = None) -> httpx.Response:
    return httpx.get(_upload_url(server, owner or tenant.name, digest), headers=tenant.headers("write"), timeout=30)


def test_a_chunk_at_the_wrong_offset_gets_409_with_the_offset_and_the_upload_completes(small, tenant):
    digest = sha256_bytes(MID)
    first = _patch(small, tenant, digest, 0, MID[:1000], len(MID))
    assert first.status_code == 200 and first.json() == {"digest": digest, "offset": 1000, "complete": False}
    assert first.headers["upload-offset"] == "1000"
    for wrong in (0, 500, 1500):  # behind, restarting, ahead: all told where the upload stands
        response = _patch(small, tenant, digest, wrong, MID[wrong:wrong + 10], len(MID))
        assert response.status_code == 409 and response.json()["code"] == "conflict", wrong
        assert response.headers["upload-offset"] == "1000"
    assert _state(small, tenant, digest).json() == {"digest": digest, "offset": 1000, "complete": False}
    bare = httpx.patch(_upload_url(small, tenant.name, digest), headers=tenant.headers("write"), content=b"x")
    assert bare.status_code == 422 and "Upload-Offset" in bare.json()["detail"]  # no offset or length: one clear line
    last = _patch(small, tenant, digest, 1000, MID[1000:], len(MID))
    assert last.status_code == 200 and last.json()["complete"] is True and last.json()["offset"] == len(MID)
    again = _patch(small, tenant, digest, len(MID), b"", len(MID))  # a retried last chunk: already complete
    assert again.status_code == 200 and again.json()["complete"] is True
    version = httpx.post(f"{small.url}/v1/tenants/{tenant.name}/tasks/t/versions", json={"digest": digest},
                         headers=tenant.headers("write"), timeout=30)
    assert version.status_code == 201 and version.json()["version"]["digest"] == digest
    stored = tenant.client("read").read_blob(tenant.client("read").resolve("t@v1"))
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(MID).hexdigest()


def test_a_corrupted_chunk_fails_the_digest_check_and_nothing_is_registered(small, tenant):
    digest = sha256_bytes(MID)
    assert _patch(small, tenant, digest, 0, MID[:1000], len(MID)).status_code == 200
    damaged = MID[1000:1500] + bytes([MID[1500] ^ 0xFF]) + MID[1501:]
    response = _patch(small, tenant, digest, 1000, damaged, len(MID))
    assert response.status_code == 422 and response.json()["code"] == "integrity"
    assert _state(small, tenant, digest).status_code == 404  # the session is gone: a retry starts clean
    version = httpx.post(f"{small.url}/v1/tenants/{tenant.name}/tasks/t/versions", json={"digest": digest},
                         headers=tenant.headers("write"), timeout=30)
    assert version.status_code == 404
    _nothing_stored(small, tenant)


def test_another_tenant_cannot_see_or_append_to_an_upload(small, tenant):
    import uuid

    admin = open_store(small.db)
    other_name = f"u{uuid.uuid4().hex[:10]}"
    other = Tenant(other_name, {"write": admin.create_token(other_name, "w", "write")}, small.url)
    admin.close()
    digest, missing = sha256_bytes(MID), sha256_bytes(b"no upload of this")
    assert _patch(small, tenant, digest, 0, MID[:1000], len(MID)).status_code == 200
    seen = _state(small, other, digest, owner=tenant.name)
    unseen = _state(small, other, missing, owner=tenant.name)
    assert seen.status_code == unseen.status_code == 404 and seen.json() == unseen.json()  # nothing to tell apart
    for offset in (0, 1000):
        appended = _patch(small, other, digest, offset, MID[offset:offset + 100], len(MID), owner=tenant.name)
        absent = _patch(small, other, missing, offset, MID[offset:offset + 100], len(MID), owner=tenant.name)
        assert appended.status_code == absent.status_code == 404 and appended.json() == absent.json()
    assert _state(small, other, digest).status_code == 404  # its own tenant has no such upload either
    assert _patch(small, other, digest, 1000, MID[1000:], len(MID)).status_code == 404
    assert _state(small, tenant, digest).json()["offset"] == 1000  # the owner's upload is untouched
    assert _patch(small, tenant, digest, 1000, MID[1000:], len(MID)).json()["complete"] is True


def test_chunks_past_the_size_limit_or_the_quota_are_refused(small, tenant, tmp_path):
    big = checkpoint_bytes(7, 1200)  # 5.3 KB: over the 4 KiB limit
    response = _patch(small, tenant, sha256_bytes(big), 0, big[:1000], len(big))
    assert response.status_code == 413 and response.json()["code"] == "quota_exceeded"
    assert _state(small, tenant, sha256_bytes(big)).status_code == 404  # nothing started
    digest = sha256_bytes(MID)
    response = _patch(small, tenant, digest, 0, MID + b"\0", len(MID))  # the body is longer than the blob
    assert response.status_code == 413 and _state(small, tenant, digest).status_code == 404
    assert _patch(small, tenant, digest, 0, MID[:1000], len(MID)).status_code == 200
    streamed = _patch(small, tenant, digest, 1000, iter([MID[1000:2000], MID[2000:] + b"\0" * 100]), len(MID))
    assert streamed.status_code == 413  # no Content-Length: refused as the bytes run past Upload-Length
    assert _state(small, tenant, digest).json()["offset"] == 1000  # the refused chunk left nothing behind
    path = tmp_path / "big.safetensors"
    path.write_bytes(big)
    with pytest.raises(QuotaExceededError):  # the client's resumable path maps the 413 back
        HttpRegistry(small.url, tenant.tokens["write"], retries=1, upload_chunk=1024).add("t", path)
    admin = open_store(small.db)
    admin.create_tenant(tenant.name, quota_bytes=1000)
    admin.close()
    other = sha256_bytes(checkpoint_bytes(8, 500))
    response = _patch(small, tenant, other, 0, b"x" * 100, len(MID))
    assert response.status_code == 413 and "quota" in response.json()["detail"]
    assert _state(small, tenant, other).status_code == 404


def test_an_abandoned_upload_expires(small, tenant):
    digest = sha256_bytes(MID)
    assert _patch(small, tenant, digest, 0, MID[:1000], len(MID)).status_code == 200
    part = small.log.parent / "home" / "registry-uploads" / tenant.name / f"{digest}.part"
    assert part.stat().st_size == 1000
    old = time.time() - 2 * 86400  # older than the default 24 h
    os.utime(part, (old, old))
    fresh = checkpoint_bytes(9, 500)  # the next upload to start sweeps abandoned ones
    assert _patch(small, tenant, sha256_bytes(fresh), 0, fresh[:100], len(fresh)).status_code == 200
    assert not part.exists() and _state(small, tenant, digest).status_code == 404


# --- resumable pushes through the session's 2-worker registry (PostgreSQL + S3) --------------------------------

CHUNK = 64 * 1024
CUT = 300_000  # where the connection is cut: in the fifth chunk


@pytest.fixture(scope="module")
def megabyte(tmp_path_factory):
    """A valid 1 MB prompt set on disk and its sha256 (hashlib on the file's bytes: an independent oracle)."""
    path = tmp_path_factory.mktemp("resumable") / "mb.safetensors"
    path.write_bytes(checkpoint_bytes(11, 250_000))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


class _Cutter(httpx.HTTPTransport):
    """Counts the upload bytes sent in PATCH bodies and their offsets; cuts the connection once after ``cut`` bytes.

    The cut is real: the client aborts the request mid-body and the TCP connection is closed, so
    the server sees a body break off.
    """

    def __init__(self, cut: int | None = None) -> None:
        super().__init__()
        self.cut, self.sent, self.offsets, self.cut_at = cut, 0, [], None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            self.offsets.append(int(request.headers["upload-offset"]))
            request.stream = _CutStream(request.stream, self)
        return super().handle_request(request)


class _CutStream(httpx.SyncByteStream):
    def __init__(self, inner, meter: _Cutter) -> None:
        self.inner, self.meter = inner, meter

    def __iter__(self):
        meter = self.meter
        for chunk in self.inner:
            if meter.cut is not None and meter.sent + len(chunk) >= meter.cut:
                chunk, meter.cut = chunk[: meter.cut - meter.sent], None
                meter.sent += len(chunk)
                meter.cut_at = len(meter.offsets)
                yield chunk
                raise httpx.WriteError("connection cut by the test")
            meter.sent += len(chunk)
            yield chunk


def _client(tenant, transport, retries: int) -> HttpRegistry:
    return HttpRegistry(tenant.url, tenant.tokens["write"], retries=retries, transport=transport, upload_chunk=CHUNK)


def _pulled_sha256(tenant, ref: str, tmp_path) -> str:
    """The sha256 of the version as a fresh store pulls it back from the registry."""
    local = open_store((tmp_path / "pulled").as_uri())
    info = pull(tenant.client("read"), local, ref)
    return hashlib.sha256(local.fetch(info).read_bytes()).hexdigest()


@pytest.mark.postgres
@pytest.mark.s3
def test_an_interrupted_push_resumes_on_rerun_with_only_the_missing_bytes(registry_server, new_tenant, megabyte,
                                                                          tmp_path):
    path, digest = megabyte
    total, tenant = path.stat().st_size, new_tenant()
    local = open_store((tmp_path / "local").as_uri())
    local.add(f"{tenant.name}/big", path)
    with pytest.raises(StoreUnavailableError, match="resume"):
        push(local, _client(tenant, _Cutter(CUT), retries=1), f"{tenant.name}/big@v1")
    with pytest.raises(TaskNotFoundError):  # nothing registered
        tenant.client("read").resolve(f"{tenant.name}/big")
    state = httpx.get(f"{tenant.url}/v1/tenants/{tenant.name}/blobs/{digest}/upload",
                      headers=tenant.headers("write"), timeout=30).json()
    held = state["offset"]
    assert 4 * CHUNK <= held <= CUT and state["complete"] is False  # the acknowledged chunks, and part of the cut one
    meter = _Cutter()
    seen: list[tuple[int, int]] = []
    push(local, _client(tenant, meter, retries=1), f"{tenant.name}/big@v1", progress=lambda d, t: seen.append((d, t)))
    assert meter.offsets[0] == held and meter.sent == total - held < total  # only the missing bytes moved
    assert seen[0] == (held, total) and seen[-1][0] == total  # the bar starts at what the server held
    assert _pulled_sha256(tenant, f"{tenant.name}/big@v1", tmp_path) == digest


@pytest.mark.postgres
@pytest.mark.s3
def test_a_dropped_connection_is_resumed_within_one_push(registry_server, new_tenant, megabyte, tmp_path):
    path, digest = megabyte
    total, tenant = path.stat().st_size, new_tenant()
    meter = _Cutter(CUT)
    info = _client(tenant, meter, retries=4).add("big", path)
    assert info.digest == digest and meter.cut_at == 5  # cut in the fifth chunk, then resumed by the same call
    resumed = meter.offsets[5]
    assert 4 * CHUNK <= resumed <= CUT  # from where the server stood, not from zero
    assert meter.sent == CUT + (total - resumed)  # the cut chunk's bytes, then only the rest
    assert all(b - a == CHUNK for a, b in zip(meter.offsets[5:], meter.offsets[6:]))
    assert _pulled_sha256(tenant, f"{tenant.name}/big@v1", tmp_path) == digest


@pytest.mark.postgres
@pytest.mark.s3
def test_two_clients_uploading_one_digest_at_once_do_not_corrupt_it(registry_server, new_tenant, megabyte, tmp_path):
    import threading

    path, digest = megabyte
    tenant = new_tenant()
    start, results = threading.Barrier(2), []

    def upload() -> None:
        client = _client(tenant, None, retries=4)
        start.wait()
        try:
            results.append(client.add("big", path).digest)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == [digest, digest]
    assert [v.digest for v in tenant.client("read").list_versions("big")] == [digest]  # one version, not two
    assert tenant.client("admin").verify() == []
    assert _pulled_sha256(tenant, f"{tenant.name}/big@v1", tmp_path) == digest


def test_a_server_without_resumable_uploads_gets_the_blob_in_one_put(tmp_path):
    """An older registry (no .../upload route: 404) is sent the whole blob in one PUT, as before."""
    data, seen = checkpoint_bytes(12, 2000), []
    not_found = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "Not Found", "code": "not_found"}

    def older_server(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if request.method == "PUT":
            assert request.read() == data
            return httpx.Response(201, json={"digest": sha256_bytes(data), "size": len(data)})
        return httpx.Response(404, json=not_found)

    reg = HttpRegistry("http://registry.invalid", "vop_token", retries=1, upload_chunk=1024,
                       transport=httpx.MockTransport(older_server))
    assert reg._upload("acme", data) == sha256_bytes(data)
    assert seen == ["GET", "PATCH", "PUT"]
