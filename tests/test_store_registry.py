"""The direct registry on SQLite and on a real PostgreSQL: versions, aliases, scoping, bad input."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import exc as sa_exc

from tests.fixtures.stores import assert_implements_registry, checkpoint_bytes
from vopstore.blobs.base import blob_key, is_blob_key
from vopstore.errors import (AliasNotFoundError, BlobIntegrityError, ConfigError, ConflictError, FileMissingError,
                             InvalidCheckpointError, InvalidRefError, PermissionDeniedError, StoreUnavailableError,
                             TaskNotFoundError, VersionNotFoundError)
from vopstore.store import open_store


def test_registry_satisfies_the_protocol(registry):
    assert_implements_registry(registry)


def test_add_numbers_versions_and_resolves_latest(registry, ckpt):
    before = datetime.now(timezone.utc)
    v1 = registry.add("lsmdc", ckpt(1), metrics={"t2v_r1": 21.5}, message="first", training_config={"lr": 1e-3})
    v2 = registry.add("lsmdc", ckpt(2), parent="lsmdc@v1")
    after = datetime.now(timezone.utc)
    assert (v1.ref, v2.ref) == ("local/lsmdc@v1", "local/lsmdc@v2")
    assert registry.resolve("lsmdc").ref == v2.ref == registry.resolve("local/lsmdc@latest").ref
    got = registry.resolve("lsmdc@v1")
    assert got.metrics == {"t2v_r1": 21.5} and got.message == "first" and got.training_config == {"lr": 1e-3}
    assert (got.method, got.params, got.backbone_name, got.size) == ("vop", 16, "tiny", len(checkpoint_bytes(1)))
    # an aware timestamp of when it was added (1 s slack for the database's rounding), in add order
    assert got.created_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= got.created_at <= registry.resolve("lsmdc@v2").created_at
    assert registry.resolve("lsmdc@v2").created_at <= after + timedelta(seconds=1)
    assert registry.resolve("lsmdc@v2").parent == "local/lsmdc@v1"


def test_same_bytes_again_is_the_same_version(registry, ckpt):
    first = registry.add("a", ckpt(1))
    assert registry.add("a", ckpt(1)).ref == first.ref
    assert registry.add("b", ckpt(1)).ref == "local/b@v1"  # another task may hold the same bytes


def test_aliases_move_and_untag(registry, ckpt):
    registry.add("t", ckpt(1))
    registry.add("t", ckpt(2))
    assert registry.tag("t@v1", "prod").aliases == ("prod",)
    assert registry.resolve("t@prod").number == 1
    registry.tag("t@v2", "prod")
    assert registry.resolve("t@prod").number == 2
    assert registry.resolve("t@v1").aliases == ()
    assert registry.list_tasks()[0].aliases == {"prod": 2}
    registry.untag("t", "prod")
    with pytest.raises(AliasNotFoundError):
        registry.resolve("t@prod")
    with pytest.raises(AliasNotFoundError):
        registry.untag("t", "prod")
    with pytest.raises(InvalidRefError):
        registry.tag("t@v1", "latest")


def test_alias_compare_and_swap(registry, ckpt):
    v1, v2 = registry.add("t", ckpt(1)), registry.add("t", ckpt(2))
    registry.tag("t@v1", "prod")
    with pytest.raises(ConflictError, match="someone moved it"):
        registry.tag("t@v2", "prod", expected_digest=v2.digest)
    assert registry.resolve("t@prod").number == 1
    assert registry.tag("t@v2", "prod", expected_digest=v1.digest).number == 2
    with pytest.raises(ConflictError):
        registry.tag("t@v1", "canary", expected_digest=v1.digest)  # no alias yet: nothing to compare


def test_remove_refuses_aliased_and_never_reuses_numbers(registry, ckpt):
    registry.add("t", ckpt(1))
    registry.add("t", ckpt(2))
    registry.tag("t@v2", "prod")
    with pytest.raises(ConflictError, match="aliased as prod"):
        registry.remove("t@v2")
    assert registry.remove("t@prod", force=True).number == 2
    with pytest.raises(VersionNotFoundError):
        registry.resolve("t@v2")
    assert registry.add("t", ckpt(3)).number == 3
    assert [v.number for v in registry.list_versions("t")] == [1, 3]


def test_list_tasks_counts(registry, ckpt):
    for seed in range(3):
        registry.add("x", ckpt(seed))
    registry.add("y", ckpt(9))
    summary = {t.ref: (t.versions, t.latest) for t in registry.list_tasks()}
    assert summary == {"local/x": (3, 3), "local/y": (1, 1)}


def test_fetch_caches_verified_file(registry, ckpt, vopstore_home):
    info = registry.add("t", ckpt(1))
    path = registry.fetch("t")
    assert path.read_bytes() == checkpoint_bytes(1)
    assert str(path).startswith(str(vopstore_home / "cache")) and info.digest in path.name
    path.write_bytes(b"damaged")  # a damaged cache entry is dropped and fetched again
    assert registry.fetch(info).read_bytes() == checkpoint_bytes(1)


def test_tampered_local_blob_is_refused(registry, ckpt):
    info = registry.add("t", ckpt(1))
    blob = registry.blobs.path(blob_key(info.tenant, info.digest))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(BlobIntegrityError, match="corrupt"):
        registry.fetch(info)
    problems = registry.verify()
    assert len(problems) == 1 and "local/t@v1" in problems[0] and "corrupt" in problems[0]
    blob.unlink()
    assert "missing" in registry.verify("t@v1")[0]


def test_gc_removes_only_unreferenced_blobs(registry, ckpt):
    registry.add("t", ckpt(1))
    registry.add("t", ckpt(2))
    registry.remove("t@v2")
    assert registry.gc(grace_s=3600) == 0  # still inside the grace period
    assert registry.gc(grace_s=0, dry_run=True) == 1
    assert registry.gc(grace_s=0) == 1
    assert registry.gc(grace_s=0) == 0
    assert registry.verify() == []
    assert len([key for key in registry.blobs.list() if is_blob_key(key)]) == 1  # manifests etc. stay


def test_tenant_scoping_and_tokens(store_spec, ckpt):
    admin = store_spec.open()
    admin.add("acme/lsmdc", ckpt(1))
    admin.add("other/lsmdc", ckpt(2))
    token = admin.create_token("acme", "ci")
    assert token not in repr(admin.engine.url)
    acme = store_spec.open(token=token)
    assert acme.tenant == "acme"
    assert acme.resolve("lsmdc").ref == "acme/lsmdc@v1"  # refs default to the scoped tenant
    assert [t.ref for t in acme.list_tasks()] == ["acme/lsmdc"]
    with pytest.raises(PermissionDeniedError):
        acme.resolve("other/lsmdc")
    with pytest.raises(PermissionDeniedError):
        acme.add("other/new", ckpt(3))
    with pytest.raises(PermissionDeniedError):
        acme.create_token("other")
    assert len(acme.verify()) == 0 and acme.gc(grace_s=0) == 0
    with pytest.raises(PermissionDeniedError):
        store_spec.open(token="vop_not-a-token")
    scoped = store_spec.open(tenant="other")
    assert [t.ref for t in scoped.list_tasks()] == ["other/lsmdc"]


@pytest.mark.parametrize("ref, error", [
    ("", InvalidRefError), ("Upper", InvalidRefError), ("a/b/c", InvalidRefError), ("t@", InvalidRefError),
    ("t@v0", InvalidRefError), ("../etc", InvalidRefError), ("nope", TaskNotFoundError),
    ("t@v9", VersionNotFoundError), ("t@staging", AliasNotFoundError),
])
def test_bad_refs(registry, ckpt, ref, error):
    registry.add("t", ckpt(1))
    with pytest.raises(error):
        registry.resolve(ref)


def test_bad_files_are_refused(registry, tmp_path):
    import numpy as np
    from safetensors.numpy import save

    good = checkpoint_bytes(1)
    tensor = {"t": np.zeros(16, dtype=np.float32)}
    cases = {"truncated": good[:-3], "not-safetensors": b"hello world, not a checkpoint",
             "metadata-not-json": save(tensor, metadata={"vopstore": "{not json"}),
             "no-metadata": save(tensor),
             "wrong-params": good.replace(b'\\"params\\":16', b'\\"params\\":17')}
    assert cases["wrong-params"] != good
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InvalidCheckpointError):
            registry.add("t", tmp_path / name)
    with pytest.raises(FileMissingError):
        registry.add("t", tmp_path / "absent.safetensors")
    with pytest.raises(ConfigError, match="metrics must be a JSON object"):
        registry.add("t", tmp_path / "x", metrics=["not", "a", "dict"])
    (tmp_path / "good").write_bytes(good)
    with pytest.raises(ConfigError, match="metrics is not JSON-serialisable"):
        registry.add("t", tmp_path / "good", metrics={"r1": float("nan")})
    assert registry.list_tasks() == []


def test_unreachable_database_is_one_line():
    with pytest.raises(StoreUnavailableError) as err:
        open_store("postgresql+psycopg://127.0.0.1:1/x", blobs="file:///tmp/unused-blobs")
    assert "\n" not in str(err.value) and "127.0.0.1:1" in str(err.value)


@pytest.mark.postgres
def test_shared_database_is_not_migrated_implicitly(postgres_db, tmp_path):
    with pytest.raises(StoreUnavailableError, match="vopstore db upgrade"):
        open_store(postgres_db, blobs=tmp_path.as_uri())


def test_database_url_needs_blobs_and_a_registry_url_needs_a_token(monkeypatch):
    monkeypatch.delenv("VOPSTORE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="a database URL needs a blob store"):
        open_store("postgresql+psycopg://127.0.0.1:1/x")
    with pytest.raises(ConfigError, match="needs a token"):
        open_store("https://registry.example.com")
    with pytest.raises(ConfigError, match="unsupported store URL 'ftp://example.com/store'"):
        open_store("ftp://example.com/store")


def test_gc_racing_an_add_never_leaves_a_version_without_blob(registry, ckpt):
    """gc collects a blob between an add's upload and its version row: the add stages it again."""
    stage, collected = registry._stage_blob, []

    def stage_then_collect(tenant, digest, data, *rest):
        stage(tenant, digest, data, *rest)
        if not collected:
            collected.append(registry.gc(grace_s=0))  # no grace: the fresh blob is fair game

    registry._stage_blob = stage_then_collect
    info = registry.add("t", ckpt(1))
    assert collected == [1]
    assert registry.verify() == [] and registry.read_blob(info)


def test_add_racing_gc_file_deletion_uploads_the_bytes_again(registry, ckpt):
    """An add of the bytes gc is collecting waits for gc, then uploads them afresh (no version without blob)."""
    path = ckpt(1)
    registry.remove(registry.add("t", path).ref)
    real_delete, added, adders = registry.blobs.delete, [], []

    def racing_delete(key):
        registry.blobs.delete = real_delete
        adders.append(threading.Thread(target=lambda: added.append(registry.add("t", path))))
        adders[0].start()
        adders[0].join(timeout=1.0)  # the add runs now, between gc's row deletion and its file deletion
        real_delete(key)

    registry.blobs.delete = racing_delete
    assert registry.gc(grace_s=0) == 1
    adders[0].join(timeout=60)
    assert [v.number for v in added] == [2]
    assert registry.verify() == [] and registry.read_blob(added[0])


def test_adding_the_bytes_again_repairs_a_corrupt_or_missing_blob(registry, ckpt):
    info = registry.add("t", ckpt(1))
    blob = registry.blobs.path(blob_key(info.tenant, info.digest))
    blob.chmod(0o644)
    blob.write_bytes(bytes([blob.read_bytes()[0] ^ 0xFF]) + blob.read_bytes()[1:])
    assert "corrupt" in registry.verify()[0]
    assert registry.add("t", ckpt(1)).ref == info.ref  # same version, bytes restored
    assert registry.verify() == []
    blob.unlink()
    assert registry.add("t", ckpt(1)).ref == info.ref and registry.verify() == []


def test_gc_deletes_only_keys_shaped_like_its_own(registry, ckpt):
    registry.add("t", ckpt(1))
    digest = "cd" * 32
    foreign = ["README", "local/notes.txt", f"local/sha256/ab/{digest}", f"local/sha256/cd/{digest}.bak",
               f"Upper/sha256/cd/{digest}", f"local/md5/cd/{digest}"]
    orphan = f"local/sha256/cd/{digest}"  # blob-shaped, no row: an orphan of this database
    for key in [*foreign, orphan]:
        registry.blobs.path(key).parent.mkdir(parents=True, exist_ok=True)
        registry.blobs.path(key).write_bytes(b"not ours")
    assert registry.gc(grace_s=0, dry_run=True) == 1
    assert registry.gc(grace_s=0) == 1
    assert not registry.blobs.exists(orphan)
    assert all(registry.blobs.exists(key) for key in foreign)
    assert registry.verify() == []


def test_metadata_too_long_for_the_columns_is_refused_and_user_is_capped(store_spec, tmp_path, monkeypatch):
    (tmp_path / "long.safetensors").write_bytes(checkpoint_bytes(1, method="m" * 65))
    monkeypatch.setenv("VOPSTORE_USER", "u" * 300)
    registry = store_spec.open()
    with pytest.raises(InvalidCheckpointError, match="longer than 64"):  # PostgreSQL raised a raw DataError
        registry.add("t", tmp_path / "long.safetensors")
    (tmp_path / "ok.safetensors").write_bytes(checkpoint_bytes(1))
    assert registry.add("t", tmp_path / "ok.safetensors").created_by == "u" * 128


def _lose_one_race(monkeypatch, owner, name):
    """Make ``owner.name`` fail once the way a concurrent writer's commit makes it fail (a unique/FK violation)."""
    real, calls = getattr(owner, name), []

    def racing(*args, **kwargs):
        if not calls:
            calls.append(1)
            raise sa_exc.IntegrityError("INSERT INTO alias ...", {}, Exception("duplicate key value"))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, racing)
    return calls


def test_tag_untag_remove_retry_when_a_concurrent_writer_wins(registry, ckpt, monkeypatch):
    from vopstore.store import sql

    registry.add("t", ckpt(1))
    registry.add("t", ckpt(2))
    lost = _lose_one_race(monkeypatch, registry, "_set_aliases")
    assert registry.tag("t@v1", "prod").number == 1 and lost
    monkeypatch.undo()
    lost = _lose_one_race(monkeypatch, sql, "version_id")
    registry.untag("t", "prod")
    assert lost
    monkeypatch.undo()
    lost = _lose_one_race(monkeypatch, sql, "load_infos")
    assert registry.remove("t@v2").number == 2 and lost
    monkeypatch.undo()
    assert [v.number for v in registry.list_versions("t")] == [1] and registry.list_tasks()[0].aliases == {}


def test_scoped_list_tasks_reads_only_its_own_aliases(store_spec, ckpt):
    from sqlalchemy import event

    admin = store_spec.open()
    for tenant, seed in (("acme", 1), ("other", 2)):
        admin.add(f"{tenant}/t", ckpt(seed))
        admin.tag(f"{tenant}/t@v1", "prod")
    acme, alias_queries = store_spec.open(tenant="acme"), []

    def record_alias_queries(_conn, _cursor, statement, _params, _context, _many):
        if "FROM alias" in statement:
            alias_queries.append(statement)

    event.listen(acme.engine, "before_cursor_execute", record_alias_queries)
    assert [(t.ref, t.aliases) for t in acme.list_tasks()] == [("acme/t", {"prod": 1})]
    assert len(alias_queries) == 1 and "WHERE alias.task_id IN" in alias_queries[0]


def test_add_reads_the_file_once(registry, ckpt, monkeypatch):
    from pathlib import Path

    path, reads, real = ckpt(1), [], Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real(self))
    registry.add("t", path)
    assert reads.count(path) == 1
