"""One contract, two registries: the direct one (PostgreSQL + S3) and the HTTP one (the server over the same store).

Each test runs against both, in a fresh tenant, and expects the same answers:
the HTTP registry must behave exactly like a direct store.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.fixtures.stores import assert_implements_registry, checkpoint_bytes
from vopstore.errors import (AliasNotFoundError, ConfigError, ConflictError, FileMissingError,
                             InvalidCheckpointError, InvalidRefError, TaskNotFoundError, VersionNotFoundError)
from vopstore.store import open_store, pull, push

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


@pytest.fixture(params=["direct", "http"])
def reg(request, registry_server, new_tenant, s3_env):
    server, _ = registry_server
    tenant = new_tenant()
    if request.param == "direct":
        handle = open_store(server.db, tenant.name, blobs=server.blobs)
    else:
        handle = tenant.client("admin")
    yield handle
    handle.close()


def test_satisfies_the_protocol(reg):
    assert_implements_registry(reg)


def test_add_resolve_list(reg, ckpt):
    t = reg.default_tenant
    before = datetime.now(timezone.utc)
    v1 = reg.add("lsmdc", ckpt(1), metrics={"t2v_r1": 21.5}, message="first", training_config={"lr": 1e-3})
    v2 = reg.add("lsmdc", ckpt(2), parent="lsmdc@v1")
    after = datetime.now(timezone.utc)
    assert (v1.ref, v2.ref) == (f"{t}/lsmdc@v1", f"{t}/lsmdc@v2")
    assert reg.resolve("lsmdc").ref == v2.ref == reg.resolve(f"{t}/lsmdc@latest").ref
    got = reg.resolve("lsmdc@v1")
    assert got.metrics == {"t2v_r1": 21.5} and got.message == "first" and got.training_config == {"lr": 1e-3}
    assert (got.method, got.params, got.backbone_name, got.size) == ("vop", 16, "tiny", len(checkpoint_bytes(1)))
    # an aware timestamp of when it was added (1 s slack for the database's rounding), in add order
    assert got.created_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= got.created_at <= reg.resolve("lsmdc@v2").created_at
    assert reg.resolve("lsmdc@v2").created_at <= after + timedelta(seconds=1)
    assert reg.resolve("lsmdc@v2").parent == f"{t}/lsmdc@v1"
    assert [v.number for v in reg.list_versions("lsmdc")] == [1, 2]
    assert [(x.ref, x.versions, x.latest) for x in reg.list_tasks()] == [(f"{t}/lsmdc", 2, 2)]
    assert reg.add("lsmdc", ckpt(1)).ref == v1.ref  # the same bytes are the same version


def test_aliases_move_untag_and_compare_and_swap(reg, ckpt):
    v1, v2 = reg.add("t", ckpt(1)), reg.add("t", ckpt(2))
    assert reg.tag("t@v1", "prod").aliases == ("prod",)
    assert reg.resolve("t@prod").number == 1
    with pytest.raises(ConflictError, match="someone moved it"):
        reg.tag("t@v2", "prod", expected_digest=v2.digest)
    assert reg.tag("t@v2", "prod", expected_digest=v1.digest).number == 2
    assert reg.list_tasks()[0].aliases == {"prod": 2}
    reg.untag("t", "prod")
    with pytest.raises(AliasNotFoundError):
        reg.resolve("t@prod")
    with pytest.raises(AliasNotFoundError):
        reg.untag("t", "prod")
    with pytest.raises(InvalidRefError):
        reg.tag("t@v1", "latest")


def test_remove_refuses_aliased_and_never_reuses_numbers(reg, ckpt):
    reg.add("t", ckpt(1))
    reg.add("t", ckpt(2))
    reg.tag("t@v2", "prod")
    with pytest.raises(ConflictError, match="aliased as prod"):
        reg.remove("t@v2")
    assert reg.remove("t@prod", force=True).number == 2
    with pytest.raises(VersionNotFoundError):
        reg.resolve("t@v2")
    assert reg.add("t", ckpt(3)).number == 3


@pytest.mark.parametrize("ref, error", [
    ("Upper", InvalidRefError), ("a/b/c", InvalidRefError), ("t@v0", InvalidRefError), ("../etc", InvalidRefError),
    ("nope", TaskNotFoundError), ("t@v9", VersionNotFoundError), ("t@staging", AliasNotFoundError),
])
def test_bad_refs(reg, ckpt, ref, error):
    reg.add("t", ckpt(1))
    with pytest.raises(error):
        reg.resolve(ref)


def test_bad_input_is_refused_and_nothing_is_stored(reg, tmp_path):
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidCheckpointError):
        reg.add("t", tmp_path / "junk")
    with pytest.raises(FileMissingError):
        reg.add("t", tmp_path / "absent.safetensors")
    (tmp_path / "good").write_bytes(checkpoint_bytes(1))
    with pytest.raises(ConfigError, match="metrics is not JSON-serialisable"):
        reg.add("t", tmp_path / "good", metrics={"r1": float("nan")})
    assert reg.list_tasks() == []


def test_fetch_verify_and_log(reg, ckpt):
    info = reg.add("t", ckpt(1))
    path = reg.fetch("t")
    assert path.read_bytes() == checkpoint_bytes(1)
    assert reg.verify() == [] and reg.verify("t@v1") == []
    reg.tag("t@v1", "prod")
    reg.add("t", ckpt(2))
    reg.tag("t@v2", "prod")
    reg.untag("t", "prod")
    reg.remove("t@v1")
    entries = reg.log("t")
    assert [e["action"] for e in entries] == ["add", "tag", "add", "tag", "untag", "rm"]
    moves = [(e["old"] or {}).get("version") for e in entries if e["action"] in ("tag", "untag")]
    assert moves == [None, 1, 2]
    assert entries[0]["new"] == {"version": 1, "digest": info.digest} and all(e["actor"] for e in entries)


def test_push_and_pull_between_a_local_store_and_the_registry(reg, tmp_path, ckpt):
    local = open_store(str(tmp_path / "local"))
    t = reg.default_tenant
    local.add(f"{t}/lsmdc", ckpt(1), metrics={"r1": 2.0})
    local.tag(f"{t}/lsmdc@v1", "prod")
    pushed = push(local, reg, f"{t}/lsmdc@prod")
    assert pushed.ref == f"{t}/lsmdc@v1" and reg.resolve("lsmdc@prod").metrics == {"r1": 2.0}
    assert push(local, reg, f"{t}/lsmdc@prod").ref == pushed.ref  # idempotent
    reg.add("lsmdc", ckpt(2))
    reg.tag("lsmdc@v2", "prod")
    with pytest.raises(ConflictError, match="on the remote"):
        push(local, reg, f"{t}/lsmdc@prod")  # someone else promoted v2 there
    other = open_store(str(tmp_path / "other"))
    pulled = pull(reg, other, f"{t}/lsmdc@prod")
    assert pulled.number == 2 and other.resolve(f"{t}/lsmdc@prod").digest == reg.resolve("lsmdc@v2").digest
    assert [e["action"] for e in reg.log("lsmdc")][:2] == ["import", "tag"]
