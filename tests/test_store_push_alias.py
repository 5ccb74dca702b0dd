"""Pushing task@alias never silently moves an alias someone else moved on the remote."""

from __future__ import annotations

import pytest

from tests.fixtures.stores import make_checkpoint
from vopstore.errors import ConflictError
from vopstore.store import open_store, push


def test_push_refuses_to_move_a_diverged_remote_alias(tmp_path):
    local, remote = open_store(str(tmp_path / "local")), open_store(str(tmp_path / "remote"))
    v1 = local.add("lsmdc", make_checkpoint(tmp_path / "a.safetensors", seed=1))
    local.tag(v1.ref, "prod")
    push(local, remote, "lsmdc@prod")  # first push: the alias is created remotely
    assert remote.resolve("lsmdc@prod").digest == v1.digest

    colleague = remote.add("lsmdc", make_checkpoint(tmp_path / "b.safetensors", seed=2))
    remote.tag(colleague.ref, "prod")  # someone promoted v2 on the remote
    with pytest.raises(ConflictError, match="--force"):
        push(local, remote, "lsmdc@prod")
    assert remote.resolve("lsmdc@prod").digest == colleague.digest  # untouched

    push(local, remote, "lsmdc@prod", force=True)
    assert remote.resolve("lsmdc@prod").digest == v1.digest
    push(local, remote, "lsmdc@prod")  # agreeing alias: an idempotent no-op


def test_push_alias_between_stores_scoped_to_another_tenant(tmp_path):
    """Refs without a tenant mean the handle's tenant (acme here), for the conflict check too, not `local`."""
    local = open_store(str(tmp_path / "local"), "acme")
    remote = open_store(str(tmp_path / "remote"), "acme")
    v1 = local.add("lsmdc", make_checkpoint(tmp_path / "a.safetensors", seed=1))
    local.tag(v1.ref, "prod")
    assert push(local, remote, "lsmdc@prod").ref == "acme/lsmdc@v1"
    assert push(local, remote, "lsmdc@prod").ref == "acme/lsmdc@v1"  # the alias already agrees: a no-op
    assert remote.resolve("acme/lsmdc@prod").digest == v1.digest

    colleague = remote.add("lsmdc", make_checkpoint(tmp_path / "b.safetensors", seed=2))
    remote.tag(colleague.ref, "prod")
    with pytest.raises(ConflictError, match="acme/lsmdc@prod points at v2 on the remote but at v1 here"):
        push(local, remote, "lsmdc@prod")
    assert remote.resolve("lsmdc@prod").digest == colleague.digest
