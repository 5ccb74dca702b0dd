"""Tenant scope on every path of the direct registry: a handle scoped to tenant A against tenant B's objects.

One parametrised test over EVERY public attribute of :class:`DirectRegistry`, enumerated with
``inspect`` (a new public method without a case here fails), on SQLite and PostgreSQL. Each case
calls a handle opened as tenant ``acme`` with arguments that name tenant ``beta``'s objects (its
refs, its exact ``VersionInfo``, its bytes, its token names) and expects one of:

* ``refused``: PermissionDeniedError (said by the handle's own scope check, which names the tenant
  it is opened as; the tenant-prefixed blob layer underneath is a second line, not the check) or a
  NotFoundError;
* ``confined``: calls that cannot name another tenant (list_tasks, verify(), log(), gc, ...) answer
  about acme alone: nothing of beta in what they return;
* ``credential``: a token is its own credential (authenticate returns the token's tenant); the
  handle's scope does not widen.

After every case, beta's state seen through an unscoped handle (its versions, aliases, tasks,
tokens, audit log) and the whole database and blob store (every row of every table, every blob's
bytes) are exactly as before. beta's version v1 is in the local cache (fetched by the admin), so a
fetch that skipped the scope check would be served it; beta has an unreferenced blob (a gc that
reached beta would collect it) and a corrupt one (a verify that reached beta would report it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re

import pytest
from sqlalchemy import select

from tests.fixtures.stores import checkpoint_bytes, make_checkpoint
from vopstore.blobs.base import blob_key
from vopstore.core import sha256_bytes
from vopstore.errors import NotFoundError, PermissionDeniedError
from vopstore.store.direct import DirectRegistry, TenantBlobs

A, B = "acme", "beta"
SCOPE_MESSAGE = re.compile(rf"opened as tenant '{A}'")
SECRET_WORDS = (B, "secret", "hidden")  # every name of beta's: none may appear in what a confined call returns


@dataclasses.dataclass
class World:
    spec: object
    admin: DirectRegistry
    b_v1: object  # beta/secret@v1 (aliased "hidden", in the local cache)
    b_v2: object  # beta/secret@v2 (its blob is corrupt)
    b_bytes: bytes  # v1's bytes
    b_token: str
    new_bytes: bytes
    new_path: object

    def scoped(self) -> DirectRegistry:
        return self.spec.open(tenant=A)


@pytest.fixture
def world(store_spec, tmp_path) -> World:
    admin = store_spec.open()
    admin.add(f"{A}/t", make_checkpoint(tmp_path / "a.safetensors", 1))
    b_v1 = admin.add(f"{B}/secret", make_checkpoint(tmp_path / "b1.safetensors", 2), message="beta's first")
    b_v2 = admin.add(f"{B}/secret", make_checkpoint(tmp_path / "b2.safetensors", 3))
    b_v1 = admin.tag(b_v1.ref, "hidden")
    b_bytes = admin.read_blob(b_v1)
    admin.fetch(b_v1)  # beta's bytes are now in the local cache, keyed by tenant
    admin.upload(checkpoint_bytes(4), tenant=B)  # an unreferenced blob of beta's: a gc reaching it would delete it
    corrupt = admin.blobs.path(blob_key(B, b_v2.digest))
    corrupt.write_bytes(corrupt.read_bytes()[:-1] + bytes([corrupt.read_bytes()[-1] ^ 1]))
    token = admin.create_token(B, "ci-secret", "admin")
    admin.authenticate(token)  # used once now: its last_used_at is not rewritten within the next minute
    new = checkpoint_bytes(5)
    world = World(store_spec, admin, b_v1, b_v2, b_bytes, token, new, make_checkpoint(tmp_path / "new.safetensors", 5))
    yield world
    admin.close()


def _beta_view(w: World) -> dict:
    """beta as the unscoped handle reports it."""
    admin = w.admin
    return {"versions": [dataclasses.asdict(v) for v in admin.list_versions(f"{B}/secret")],
            "tasks": [t for t in admin.list_tasks() if t.tenant == B],
            "tokens": admin.list_tokens(B),
            "log": admin.log(f"{B}/secret"),
            "tenant": [t for t in admin.list_tenants() if t["name"] == B]}


def _everything(w: World) -> dict:
    """Every row of every table and every blob's bytes: what a refused call must leave untouched."""
    from vopstore.db.models import Base

    rows = {}
    with w.admin.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows[table.name] = sorted(map(repr, conn.execute(select(table)).all()))
    backend = w.admin.blobs
    blobs = {key: hashlib.sha256(backend.get(key)).hexdigest() for key in sorted(backend.list(""))}
    return {"rows": rows, "blobs": blobs}


def _state(w: World) -> tuple:
    return _beta_view(w), _everything(w)


def _new_info(w: World, **changes):
    """beta's v1 record pointing at other bytes (an import of a version beta never had)."""
    return dataclasses.replace(w.b_v1, digest=sha256_bytes(w.new_bytes), size=len(w.new_bytes), **changes)


# Each case: (label, call(handle, world), kind). Kinds: "refused", "confined" (then the call returns a value
# checked to hold nothing of beta's), "credential"; for properties also "refused-attribute" (the setter refuses)
# and "refused-blobs" (the blob layer refuses a key outside the handle's tenant).
CASES: dict[str, list[tuple]] = {
    "resolve": [("latest", lambda a, w: a.resolve(f"{B}/secret"), "refused"),
                ("number", lambda a, w: a.resolve(f"{B}/secret@v1"), "refused"),
                ("alias", lambda a, w: a.resolve(f"{B}/secret@hidden"), "refused"),
                ("ghost task", lambda a, w: a.resolve(f"{B}/nope"), "refused")],
    "list_versions": [("task", lambda a, w: a.list_versions(f"{B}/secret"), "refused")],
    "list_tasks": [("all in reach", lambda a, w: a.list_tasks(), "confined")],
    "read_blob": [("beta's info", lambda a, w: a.read_blob(w.b_v1), "refused")],
    "open_blob": [("beta's info", lambda a, w: a.open_blob(w.b_v1).__enter__(), "refused")],
    "fetch": [("beta's info (cached)", lambda a, w: a.fetch(w.b_v1), "refused"),
              ("beta's ref", lambda a, w: a.fetch(f"{B}/secret@v1"), "refused"),
              ("beta's alias", lambda a, w: a.fetch(f"{B}/secret@hidden"), "refused")],
    "import_version": [
        ("beta's own version again", lambda a, w: a.import_version(w.b_v1, w.b_bytes), "refused"),
        ("move beta's alias", lambda a, w: a.import_version(w.b_v1, w.b_bytes, ("hidden", "prod")), "refused"),
        ("a new version of beta", lambda a, w: a.import_version(_new_info(w, number=9), w.new_bytes), "refused"),
        ("a clash with beta's v1", lambda a, w: a.import_version(_new_info(w), w.new_bytes), "refused")],
    "add": [("beta's task", lambda a, w: a.add(f"{B}/secret", w.new_path), "refused"),
            ("a new task of beta", lambda a, w: a.add(f"{B}/new", w.new_path), "refused"),
            ("with a parent of beta's", lambda a, w: a.add(f"{A}/t", w.new_path, parent=f"{B}/secret@v1"),
             "refused")],
    "add_bytes": [("beta's task", lambda a, w: a.add_bytes(f"{B}/secret", w.new_bytes), "refused"),
                  ("beta's own bytes", lambda a, w: a.add_bytes(f"{B}/secret", w.b_bytes), "refused")],
    "upload": [("new bytes", lambda a, w: a.upload(w.new_bytes, tenant=B), "refused"),
               ("beta's own bytes", lambda a, w: a.upload(w.b_bytes, tenant=B), "refused")],
    "tag": [("move", lambda a, w: a.tag(f"{B}/secret@v2", "hidden"), "refused"),
            ("create", lambda a, w: a.tag(f"{B}/secret@v1", "prod"), "refused"),
            ("compare-and-swap", lambda a, w: a.tag(f"{B}/secret@v2", "hidden", expected_digest=w.b_v1.digest),
             "refused")],
    "untag": [("alias", lambda a, w: a.untag(f"{B}/secret", "hidden"), "refused")],
    "remove": [("version", lambda a, w: a.remove(f"{B}/secret@v2"), "refused"),
               ("aliased, forced", lambda a, w: a.remove(f"{B}/secret@hidden", force=True), "refused")],
    "verify": [("beta's ref", lambda a, w: a.verify(f"{B}/secret@v2"), "refused"),
               ("all in reach", lambda a, w: a.verify(), "confined")],
    "log": [("beta's task", lambda a, w: a.log(f"{B}/secret"), "refused"),
            ("beta's task, limited", lambda a, w: a.log(f"{B}/secret", limit=1), "refused"),
            ("the handle's tenant", lambda a, w: a.log(), "confined")],
    "gc": [("grace 0, forced", lambda a, w: a.gc(grace_s=0, force=True), "confined"),
           ("dry run", lambda a, w: a.gc(grace_s=0, dry_run=True), "confined")],
    "list_tokens": [("beta", lambda a, w: a.list_tokens(B), "refused")],
    "create_token": [("beta", lambda a, w: a.create_token(B, "intruder", "admin"), "refused"),
                     ("beta, taken name", lambda a, w: a.create_token(B, "ci-secret"), "refused")],
    "revoke_token": [("beta's token", lambda a, w: a.revoke_token(B, "ci-secret"), "refused"),
                     ("a ghost token", lambda a, w: a.revoke_token(B, "nope"), "refused")],
    "create_tenant": [("beta", lambda a, w: a.create_tenant(B, quota_bytes=0), "refused"),
                      ("another", lambda a, w: a.create_tenant("gamma"), "refused")],
    "list_tenants": [("all", lambda a, w: a.list_tenants(), "refused")],
    "authenticate": [("beta's token", lambda a, w: a.authenticate(w.b_token), "credential")],
    "tenant_for_token": [("beta's token", lambda a, w: a.tenant_for_token(w.b_token), "credential")],
    "close": [("close", lambda a, w: a.close(), "confined")],
    # properties
    "tenant": [("widen", lambda a, w: setattr(a, "tenant", B), "refused-attribute"),
               ("read", lambda a, w: a.tenant, "confined")],
    "default_tenant": [("read", lambda a, w: a.default_tenant, "confined")],
    "blobs": [("assign the raw backend, then read beta's blob",
               lambda a, w: setattr(a, "blobs", w.admin.blobs) or a.read_blob(w.b_v1), "refused"),
              ("assign the raw backend, then get a beta key from it",
               lambda a, w: setattr(a, "blobs", w.admin.blobs) or a.blobs.get(blob_key(B, w.b_v1.digest)),
               "refused-blobs")],
}


def _public_attributes() -> list[str]:
    return sorted(name for name, _ in inspect.getmembers(DirectRegistry) if not name.startswith("_"))


def test_the_matrix_names_only_real_attributes():
    assert set(CASES) <= set(_public_attributes()), set(CASES) - set(_public_attributes())


@pytest.mark.parametrize("name", _public_attributes())
def test_a_scoped_handle_cannot_reach_another_tenant(name, world):
    if name not in CASES:
        pytest.fail(f"DirectRegistry.{name} is public but has no case in the tenant-scope matrix: add one")
    before = _state(world)
    for label, call, kind in CASES[name]:
        scoped = world.scoped()
        try:
            if kind == "refused":
                with pytest.raises((PermissionDeniedError, NotFoundError)) as raised:
                    call(scoped, world)
                if isinstance(raised.value, PermissionDeniedError):  # the handle's own scope check said no
                    assert SCOPE_MESSAGE.search(str(raised.value)), (label, str(raised.value))
            elif kind == "refused-blobs":  # the blob layer of a scoped handle stays inside its tenant's keys
                with pytest.raises(PermissionDeniedError, match=f"outside tenant '{A}'"):
                    call(scoped, world)
                assert isinstance(scoped.blobs, TenantBlobs) and scoped.blobs.tenant == A
            elif kind == "refused-attribute":
                with pytest.raises(AttributeError):
                    call(scoped, world)
            elif kind == "confined":
                result = call(scoped, world)
                assert not any(word in repr(result) for word in SECRET_WORDS), (label, result)
            else:  # credential: the token's own identity, and the handle stays scoped to acme
                assert B in repr(call(scoped, world))
            assert scoped.tenant == A, label
            if name != "close":  # and the handle still refuses beta afterwards
                with pytest.raises(PermissionDeniedError, match=SCOPE_MESSAGE):
                    scoped.resolve(f"{B}/secret")
        finally:
            scoped.close()
        after = _state(world)
        assert after[0] == before[0], f"{name} ({label}) changed beta's state"
        assert after[1] == before[1], f"{name} ({label}) changed the store"


def test_the_world_is_not_vacuous(world):
    """What the matrix protects is really there: an unscoped handle reaches all of it."""
    admin = world.admin
    assert admin.fetch(world.b_v1).read_bytes() == world.b_bytes  # cached
    assert any(B in line for line in admin.verify())  # v2 is corrupt
    assert admin.gc(grace_s=0, dry_run=True) == 1  # beta's unreferenced upload
    assert admin.tenant_for_token(world.b_token) == B
    assert world.scoped().resolve("t").ref == f"{A}/t@v1"  # and the scoped handle does work on its own tenant
