"""Tokens against the real server: missing, malformed, unknown, expired, revoked, lifted hashes, and scopes."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import text

from vopstore.errors import AuthenticationError, ConflictError, PermissionDeniedError

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


def _get(server, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=30)


@pytest.mark.parametrize("token", [None, "vop_", "Bearer", "vop_0123456789abcdef_" + "x" * 43,
                                   "vop_zzzzzzzzzzzzzzzz_" + "x" * 43, "a" * 5000])
def test_missing_malformed_and_unknown_tokens_get_401(registry_server, new_tenant, token):
    server, _ = registry_server
    tenant = new_tenant()
    response = _get(server, f"/v1/tenants/{tenant.name}/tasks", token)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthenticated" and response.headers["WWW-Authenticate"] == "Bearer"


def test_a_token_hash_lifted_from_the_database_is_not_a_token(registry_server, new_tenant):
    server, admin = registry_server
    tenant = new_tenant()
    with admin.engine.connect() as conn:
        key_id, token_hash = conn.execute(text(
            "SELECT key_id, token_hash FROM token JOIN tenant ON tenant.id = token.tenant_id "
            "WHERE tenant.name = :t AND token.name = 'admin'"), {"t": tenant.name}).one()
    assert token_hash not in tenant.tokens["admin"]
    for forged in (token_hash, f"vop_{key_id}_{token_hash}"):
        assert _get(server, "/v1/whoami", forged).status_code == 401
    assert _get(server, "/v1/whoami", tenant.tokens["admin"]).status_code == 200


def test_revocation_takes_effect_on_the_next_request(registry_server, new_tenant):
    server, _ = registry_server
    tenant = new_tenant()
    ci = tenant.client("admin").create_token(tenant.name, "ci", "write")
    assert _get(server, "/v1/whoami", ci).json() == {"tenant": tenant.name, "token": "ci", "scope": "write"}
    tenant.client("admin").revoke_token(tenant.name, "ci")
    response = _get(server, "/v1/whoami", ci)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    states = {t["name"]: t["state"] for t in tenant.client("admin").list_tokens(tenant.name)}
    assert states["ci"] == "revoked" and states["admin"] == "active"


def test_expiry_takes_effect_on_the_next_request(registry_server, new_tenant):
    server, admin = registry_server
    tenant = new_tenant()
    short = admin.create_token(tenant.name, "short", "read", expires_in_s=1.0)
    assert _get(server, "/v1/whoami", short).status_code == 200
    time.sleep(1.2)
    response = _get(server, "/v1/whoami", short)
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    with pytest.raises(AuthenticationError, match="expired"):
        from vopstore.store.http import HttpRegistry

        HttpRegistry(server.url, short, retries=1).list_tasks()


def test_token_listing_shows_metadata_never_the_token(registry_server, new_tenant):
    server, _ = registry_server
    tenant = new_tenant()
    _get(server, "/v1/whoami", tenant.tokens["read"])
    response = httpx.get(f"{server.url}/v1/tenants/{tenant.name}/tokens", headers=tenant.headers("admin"))
    assert response.status_code == 200
    for token in tenant.tokens.values():
        assert token not in response.text and token.split("_")[1] not in response.text
    rows = {row["name"]: row for row in response.json()}
    assert set(rows) == {"read", "write", "admin"}
    assert rows["read"]["last_used_at"] is not None and rows["read"]["expires_at"] is None


def test_scopes_are_enforced_and_named(registry_server, new_tenant, ckpt):
    server, _ = registry_server
    tenant = new_tenant()
    tenant.client("write").add("t", ckpt(1))
    reader, writer = tenant.client("read"), tenant.client("write")
    assert reader.resolve("t").number == 1 and reader.fetch("t").is_file()
    with pytest.raises(PermissionDeniedError, match="'write' scope"):
        reader.add("t", ckpt(2))
    with pytest.raises(PermissionDeniedError, match="'write' scope"):
        reader.tag("t@v1", "prod")
    assert writer.tag("t@v1", "prod").aliases == ("prod",)
    for call in (lambda: writer.remove("t@v1", force=True), lambda: writer.gc(), lambda: writer.list_tokens(tenant.name),
                 lambda: writer.create_token(tenant.name, "mine", "admin"), lambda: writer.log()):
        with pytest.raises(PermissionDeniedError, match="'admin' scope"):
            call()
    response = httpx.delete(f"{server.url}/v1/tenants/{tenant.name}/tasks/t/versions/v1",
                            headers=tenant.headers("write"))
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert reader.resolve("t@prod").number == 1  # nothing changed


def test_admin_tokens_manage_only_their_own_tenant(new_tenant):
    a, b = new_tenant("a"), new_tenant("b")
    admin = a.client("admin")
    token = admin.create_token(a.name, "deploy", "read", expires_in_s=3600)
    with pytest.raises(ConflictError, match="live token named 'deploy'"):
        admin.create_token(a.name, "deploy", "read")
    from vopstore.store.http import HttpRegistry

    assert HttpRegistry(a.url, token).tenant == a.name
    from vopstore.errors import NotFoundError

    for call in (lambda: admin.create_token(b.name, "x", "admin"), lambda: admin.list_tokens(b.name),
                 lambda: admin.revoke_token(b.name, "admin")):
        with pytest.raises(NotFoundError):
            call()
    assert b.client("read").tenant == b.name  # b's tokens still work
    entries = admin.log()
    assert [e["action"] for e in entries] == ["token-create"] * 4  # the fixture's three, then ours
    assert entries[-1]["new"]["name"] == "deploy" and entries[-1]["actor"] == f"{a.name}:token:admin"
