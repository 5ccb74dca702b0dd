"""Uploads are never trusted, names are checked, tokens are rate-limited, and a killed server loses nothing.

A second real server for this module (one worker on a directory store, a 4 KiB
upload limit and a low rate limit), so the limits can be hit without slowing
the session's server.
"""

from __future__ import annotations

import signal
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fixtures.registry_server import Tenant, start_server
from tests.fixtures.stores import checkpoint_bytes
from vopstore.core import sha256_bytes
from vopstore.store import open_store
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
