"""The registry from a user's side: presigned downloads verified, quotas, retries, the CLI and the runtime over HTTP."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from tests.fixtures.stores import checkpoint_bytes
from tests.test_runtime_mixed import TEXTS, _one_thread, oracle_text, publish  # noqa: F401
from vopstore import Retriever
from vopstore.blobs.base import blob_key
from vopstore.errors import BlobIntegrityError, QuotaExceededError, StoreUnavailableError
from vopstore.store.http import HttpRegistry

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


def test_downloads_are_presigned_s3_urls_and_the_client_verifies_them(registry_server, new_tenant, s3_server, ckpt):
    server, _ = registry_server
    tenant = new_tenant()
    reg = tenant.client("read")
    info = tenant.client("write").add("t", ckpt(1))
    response = httpx.get(f"{server.url}/v1/tenants/{tenant.name}/tasks/t/versions/v1/blob",
                         headers=tenant.headers("read"))
    assert response.status_code == 307 and response.headers["location"].startswith(s3_server.endpoint_url)
    assert httpx.get(response.headers["location"]).content == checkpoint_bytes(1)  # no credentials needed
    bucket, prefix = server.blobs[len("s3://"):].split("/", 1)
    s3_server.client().put_object(Bucket=bucket, Key=f"{prefix}/{blob_key(tenant.name, info.digest)}",
                                  Body=checkpoint_bytes(2))  # someone tampers with the bucket
    with pytest.raises(BlobIntegrityError, match="do not hash"):
        reg.read_blob(info)
    with pytest.raises(BlobIntegrityError):
        reg.fetch("t@v1")
    assert reg.cache.get(info.digest) is None  # nothing unverified reached the cache


def test_quota_on_stored_bytes(registry_server, new_tenant, ckpt):
    _, admin = registry_server
    tenant = new_tenant()
    size = len(checkpoint_bytes(1))
    admin.create_tenant(tenant.name, quota_bytes=2 * size)
    reg = tenant.client("write")
    reg.add("t", ckpt(1))
    reg.add("t", ckpt(2))
    assert reg.add("u", ckpt(1)).number == 1  # the same bytes again cost nothing
    with pytest.raises(QuotaExceededError, match="quota"):
        reg.add("t", ckpt(3))
    assert [v.number for v in reg.list_versions("t")] == [1, 2]
    usage = {t["name"]: t for t in admin.list_tenants()}[tenant.name]
    assert usage["stored_bytes"] == 2 * size and usage["quota_bytes"] == 2 * size


def test_concurrent_uploads_never_take_a_tenant_past_its_quota(registry_server, new_tenant, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from tests.fixtures.stores import make_checkpoint

    _, admin = registry_server
    tenant = new_tenant()
    size = len(checkpoint_bytes(1))
    admin.create_tenant(tenant.name, quota_bytes=3 * size)
    files = [make_checkpoint(tmp_path / f"q{i}.safetensors", seed=300 + i) for i in range(8)]

    def add(path):
        try:
            return tenant.client("write").add("t", path)
        except QuotaExceededError:
            return None

    with ThreadPoolExecutor(8) as pool:
        stored = [info for info in pool.map(add, files) if info is not None]
    assert len(stored) == 3
    usage = {t["name"]: t for t in admin.list_tenants()}[tenant.name]
    assert usage["stored_bytes"] <= 3 * size


def test_server_messages_never_name_its_bucket_and_odd_values_are_422(registry_server, new_tenant, s3_server, ckpt):
    server, _ = registry_server
    tenant = new_tenant()
    reg = tenant.client("admin")
    info = reg.add("t", ckpt(1))
    bucket, prefix = server.blobs[len("s3://"):].split("/", 1)
    s3_server.client().delete_object(Bucket=bucket, Key=f"{prefix}/{blob_key(tenant.name, info.digest)}")
    problems = reg.verify()
    assert problems and all(bucket not in p and "s3://" not in p for p in problems)
    from vopstore.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be stored"):  # PostgreSQL refuses NUL in text: 422, not 500
        reg.add("w", ckpt(3), message="a\x00b")
    assert [t.name for t in reg.list_tasks()] == ["t"]


def test_unreachable_registry_is_one_line_naming_the_url():
    from tests.fixtures.pgcluster import free_port

    url = f"http://127.0.0.1:{free_port()}"
    reg = HttpRegistry(url, "vop_0123456789abcdef_" + "x" * 43, retries=2)
    with pytest.raises(StoreUnavailableError) as err:
        reg.list_tasks()
    assert url in str(err.value) and "\n" not in str(err.value)


def test_idempotent_calls_retry_5xx_and_writes_that_are_not_do_not():
    calls = []
    unavailable = {"code": "store_unavailable", "detail": "db restarting", "status": 503, "title": "x",
                   "type": "about:blank"}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) <= 2:
            return httpx.Response(503, json=unavailable)
        return httpx.Response(200, json={"tenant": "acme", "token": "ci", "scope": "read"})

    token = "vop_0123456789abcdef_" + "x" * 43
    reg = HttpRegistry("http://registry.invalid", token, retries=4, transport=httpx.MockTransport(flaky))
    assert reg.tenant == "acme" and calls == ["GET"] * 3  # two 503s retried, then the answer

    calls.clear()
    down = HttpRegistry("http://registry.invalid", token, retries=3,
                        transport=httpx.MockTransport(lambda r: calls.append(r.method) or httpx.Response(
                            503, json=unavailable)))
    down._identity = {"tenant": "acme"}
    with pytest.raises(StoreUnavailableError, match="db restarting"):
        down.list_tasks()
    with pytest.raises(StoreUnavailableError):
        down.untag("t", "prod")  # not idempotent: tried once
    assert calls == ["GET"] * 3 + ["DELETE"]
    proxy = HttpRegistry("http://registry.invalid", token, retries=1,
                         transport=httpx.MockTransport(lambda r: httpx.Response(502, text="<html>bad gateway")))
    with pytest.raises(StoreUnavailableError, match="without a problem document"):
        proxy.list_tasks()


def test_cli_against_the_server(registry_server, new_tenant, run, ckpt, tmp_path, monkeypatch):
    server, _ = registry_server
    tenant = new_tenant()
    monkeypatch.delenv("VOPSTORE_TOKEN", raising=False)
    assert run("remote", "add", "team", server.url, "--token", "-", stdin=tenant.tokens["write"] + "\n")[0] == 0
    from vopstore.home import config_path

    assert oct(config_path().stat().st_mode & 0o777) == "0o600"
    assert tenant.tokens["write"] not in run("remote", "ls")[1]  # never printed back
    ref = f"{tenant.name}/lsmdc"
    assert run("add", ref, str(ckpt(1)))[1].strip() == f"{ref}@v1"
    assert run("tag", f"{ref}@v1", "prod")[0] == 0
    assert run("push", f"{ref}@prod", "--remote", "team") == (0, f"pushed {ref}@v1 to team\n", "")
    listed = json.loads(run("ls", "--remote", "team", "--json")[1])
    assert [t["ref"] for t in listed] == [ref] and listed[0]["aliases"] == {"prod": 1}
    assert json.loads(run("show", "lsmdc@prod", "--remote", "team", "--json")[1])["number"] == 1
    assert run("verify", "--remote", "team")[0] == 0
    code, _, err = run("rm", "lsmdc@v1", "--force", "--remote", "team")
    assert code == 1 and "'admin' scope" in err and err.count("\n") == 1
    history = json.loads(run("log", "lsmdc", "--remote", "team", "--json")[1])
    assert [e["action"] for e in history] == ["import", "tag"]
    assert all(e["actor"] == f"{tenant.name}:token:write" for e in history)
    monkeypatch.setenv("VOPSTORE_HOME", str(tmp_path / "elsewhere"))  # a fresh machine: pull it back
    monkeypatch.setenv("VOPSTORE_TOKEN", tenant.tokens["read"])
    assert run("remote", "add", "team", server.url)[0] == 0
    assert run("pull", f"{ref}@prod", "--remote", "team") == (0, f"pulled {ref}@v1 from team\n", "")
    assert json.loads(run("show", f"{ref}@prod", "--json")[1])["digest"] == history[0]["new"]["digest"]


def test_admin_cli_tenants_and_tokens(run, tmp_path):
    store = str(tmp_path / "admin-store")
    assert run("tenant", "create", "acme", "--quota", "10MB", "--db", store) == (0, "tenant acme (quota 10MB)\n", "")
    code, token, _ = run("token", "create", "--tenant", "acme", "--scope", "write", "--expires", "30d",
                         "--name", "ci", "--db", store)
    assert code == 0 and token.startswith("vop_")
    rows = json.loads(run("token", "ls", "--tenant", "acme", "--db", store, "--json")[1])
    assert [(r["name"], r["scope"], r["state"]) for r in rows] == [("ci", "write", "active")]
    assert token.strip() not in json.dumps(rows) and rows[0]["expires_at"] is not None
    assert json.loads(run("tenant", "ls", "--db", store, "--json")[1])[0]["quota_bytes"] == 10_000_000
    assert run("token", "revoke", "ci", "--tenant", "acme", "--db", store)[0] == 0
    code, _, err = run("token", "revoke", "ci", "--tenant", "acme", "--db", store)
    assert code == 1 and "no live token" in err
    for bad in (["--scope", "root"], ["--expires", "soon"], ["--expires", "-1d"]):
        code, _, err = run("token", "create", "--tenant", "acme", "--db", store, *bad)
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1
    code, _, err = run("registry", "serve", "--db", store, "--workers", "2")
    assert code == 1 and "PostgreSQL" in err


def test_retriever_loads_and_refreshes_through_the_server_then_serves_offline(
        registry_server, new_tenant, tiny_backbone, tmp_path):
    from tests.fixtures.pgcluster import free_port

    server, _ = registry_server
    tenant = new_tenant()
    owner = tenant.client("write")
    v1, _ = publish(owner, tiny_backbone, tmp_path, f"{tenant.name}/lsmdc", "vop", 1)
    owner.tag(v1.ref, "prod")
    ref = f"{tenant.name}/lsmdc@prod"
    r = Retriever(tiny_backbone, remote=HttpRegistry(server.url, tenant.tokens["read"]))
    assert r.load(ref).digest == v1.digest
    v2, path2 = publish(owner, tiny_backbone, tmp_path, f"{tenant.name}/lsmdc", "vop", 2)
    owner.tag(v2.ref, "prod")
    assert r.refresh()[f"{tenant.name}/lsmdc"].digest == v2.digest
    expected = oracle_text(tiny_backbone, path2, TEXTS)
    torch.testing.assert_close(r.encode_text(TEXTS, task=f"{tenant.name}/lsmdc"), expected, atol=1e-5, rtol=0)
    gone = HttpRegistry(f"http://127.0.0.1:{free_port()}", tenant.tokens["read"], retries=1)  # the server is away
    offline = Retriever(tiny_backbone, remote=gone)
    assert offline.load(ref).digest == v2.digest  # from the local store and its verified cache
