"""The isolation matrix: tenant A's read, write and admin tokens against every endpoint of tenant B.

The oracle is a tenant that does not exist: each request aimed at B must get
the very status and body that the same request aimed at a ghost tenant gets
(names swapped), so a token cannot even learn that B or its tasks exist. And
afterwards B's versions, aliases, blobs, audit log and tokens are unchanged.
The endpoints come from the server's own OpenAPI schema, so a new endpoint is
in the matrix the day it is added.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.fixtures.stores import checkpoint_bytes, make_checkpoint
from vopstore.core import sha256_bytes

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

DATA = checkpoint_bytes(77)
DIGEST = sha256_bytes(DATA)
PARAMS = {"task": "lsmdc", "selector": "v1", "alias": "prod", "digest": DIGEST, "name": "admin"}


def _body(method: str, path: str) -> dict:
    """A valid request body for each endpoint that takes one (the attacks are well-formed)."""
    if path.endswith("/blobs/{digest}"):
        return {"content": DATA, "headers": {"Content-Type": "application/octet-stream"}}
    if method == "post" and path.endswith("/versions"):
        return {"json": {"digest": DIGEST, "number": 1, "aliases": ["prod"]}}
    if path.endswith("/aliases/{alias}") and method == "put":
        return {"json": {"target": "v1"}}
    if path.endswith("/verify"):
        return {"json": {"ref": "lsmdc@v1"}}
    if path.endswith("/gc"):
        return {"json": {"grace_s": 0}}
    if path.endswith("/tokens") and method == "post":
        return {"json": {"name": "intruder", "scope": "admin"}}
    return {}


def _endpoints(url: str) -> list[tuple[str, str]]:
    schema = httpx.get(f"{url}/openapi.json").json()
    found = [(method, path) for path, ops in schema["paths"].items() for method in ops
             if "{tenant}" in path]
    assert len(found) >= 15, found  # every tenant-scoped route of the API
    return found


def _snapshot(victim) -> dict:
    """Everything of tenant B an attack could change, read through B's own admin token."""
    reg = victim.client("admin")
    try:
        return {"versions": [(v.ref, v.digest, v.aliases) for v in reg.list_versions("lsmdc")],
                "tasks": [t.to_dict() for t in reg.list_tasks()], "log": reg.log(None),
                "tokens": [(t["name"], t["scope"], t["state"]) for t in reg.list_tokens(victim.name)],
                "blob": reg.read_blob(reg.resolve("lsmdc@v1")) == DATA}
    finally:
        reg.close()


def test_no_token_of_tenant_a_reaches_tenant_b(registry_server, new_tenant, tmp_path):
    server, _ = registry_server
    attacker, victim = new_tenant("a"), new_tenant("b")
    ghost = f"g{uuid.uuid4().hex[:10]}"  # never created
    owner = victim.client("admin")
    (tmp_path / "b.safetensors").write_bytes(DATA)
    owner.add("lsmdc", tmp_path / "b.safetensors", metrics={"r1": 50.0})
    owner.add("lsmdc", make_checkpoint(tmp_path / "b2.safetensors", seed=78))
    owner.tag("lsmdc@v1", "prod")
    before = _snapshot(victim)

    with httpx.Client(base_url=server.url, timeout=30) as http:
        for scope in ("read", "write", "admin"):
            for method, path in _endpoints(server.url):
                answers = {}
                for tenant in (victim.name, ghost):
                    url = path.format(tenant=tenant, **PARAMS)
                    body = _body(method, path)
                    headers = {**attacker.headers(scope), **body.pop("headers", {})}
                    response = http.request(method.upper(), url, headers=headers, **body)
                    answers[tenant] = (response.status_code, response.text.replace(tenant, "TENANT"))
                status, text = answers[victim.name]
                assert answers[victim.name] == answers[ghost], (scope, method, path)
                assert status in (403, 404), (scope, method, path, status, text)
                assert victim.name not in text and "r1" not in text and DIGEST not in text.replace(
                    f"blobs/{DIGEST}", ""), (scope, method, path, text)

    assert _snapshot(victim) == before


def test_refs_naming_another_tenant_through_the_client_look_missing(new_tenant, ckpt):
    from vopstore.errors import TaskNotFoundError

    attacker, victim = new_tenant("a"), new_tenant("b")
    victim.client("write").add("lsmdc", ckpt(1))
    reg = attacker.client("admin")
    for call in (lambda: reg.resolve(f"{victim.name}/lsmdc"), lambda: reg.list_versions(f"{victim.name}/lsmdc"),
                 lambda: reg.tag(f"{victim.name}/lsmdc@v1", "prod"), lambda: reg.log(f"{victim.name}/lsmdc"),
                 lambda: reg.remove(f"{victim.name}/lsmdc@v1", force=True)):
        with pytest.raises(TaskNotFoundError) as there:
            call()
        assert re.search(r"no task \S+/lsmdc in the registry", str(there.value))
    assert victim.client("read").resolve("lsmdc@v1").number == 1
