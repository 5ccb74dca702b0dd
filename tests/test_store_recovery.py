"""Losing the database loses nothing: store identity, gc's guards, manifests, fsck --rebuild, export's guard."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from vopstore.blobs.base import is_blob_key
from vopstore.errors import ConfigError, ConflictError, StoreUnavailableError, VersionNotFoundError
from vopstore.store import open_store
from vopstore.store.identity import STORE_ID_KEY, blob_store_id, database_id
from vopstore.store.recovery import check_store, rebuild_store


def _one_line_error(code, out, err, needle: str) -> None:
    assert code == 1 and out == "", (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def _blob_files(store_dir) -> dict[str, bytes]:
    root = store_dir / "blobs"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
            and is_blob_key(p.relative_to(root).as_posix())}


def _state(store) -> dict[str, tuple]:
    """Every version in reach: ref -> (digest, metrics, aliases, created_at, message)."""
    return {v.ref: (v.digest, v.metrics, v.aliases, v.created_at, v.message)
            for t in store.list_tasks() for v in store.list_versions(t.ref)}


def _populate(store, ckpt) -> None:
    store.add("t", ckpt(1), metrics={"t2v": {"R@1": 20.5}}, message="first")
    store.add("t", ckpt(2), metrics={"t2v": {"R@1": 21.0}})
    store.tag("t@v1", "prod")
    store.add("acme/u", ckpt(3), metrics={"r1": 1.0})


def _more(store, ckpt) -> None:
    """Writes after a backup: a version, an alias move, a removal, an untag."""
    store.add("t", ckpt(4), metrics={"t2v": {"R@1": 23.0}}, training_config={"lr": 0.001})
    store.tag("t@v3", "prod")
    store.tag("t@v2", "canary")
    store.untag("t", "canary")
    store.remove("t@v2")
    store.add("acme/u", ckpt(5))
    store.tag("acme/u@v2", "staging")


def _drop_db_files(store_dir) -> None:
    for suffix in ("-wal", "-shm"):
        (store_dir / f"store.db{suffix}").unlink(missing_ok=True)


def _damage(how: str, store_dir, backup) -> None:
    db = store_dir / "store.db"
    if how == "delete":
        db.unlink()
        _drop_db_files(store_dir)
    elif how == "zero":
        db.write_bytes(b"")
        _drop_db_files(store_dir)
    elif how == "corrupt":
        db.write_bytes(os.urandom(db.stat().st_size))
        _drop_db_files(store_dir)
    elif how == "rollback":
        shutil.copyfile(backup, db)
        _drop_db_files(store_dir)


@pytest.mark.parametrize("how", ["delete", "zero", "corrupt", "rollback"])
def test_database_loss_then_gc_then_rebuild_loses_nothing(how, run, ckpt, vopstore_home):
    store_dir = vopstore_home / "store"
    store = open_store()
    _populate(store, ckpt)
    store.close()  # the last connection checkpoints the WAL: store.db alone is a whole backup
    backup = vopstore_home / "backup.db"
    shutil.copyfile(store_dir / "store.db", backup)
    store = open_store()
    _more(store, ckpt)
    expected = _state(store)
    store.close()
    assert "local/t@v2" not in expected and expected["local/t@v3"][2] == ("prod",)
    blobs_before = _blob_files(store_dir)

    _damage(how, store_dir, backup)
    code, out, err = run("gc", "--grace", "0")
    if how == "corrupt":
        assert code != 0  # a corrupt file is refused, one way or another; nothing is deleted
    else:
        _one_line_error(code, out, err, "fsck --rebuild")
    assert _blob_files(store_dir) == blobs_before

    code, out, err = run("fsck", "--rebuild")
    assert code == 0 and err == "", (out, err)
    assert "rebuilt" in out and ("moved the old database aside" in out) == (how == "corrupt")
    store = open_store()
    assert _state(store) == expected
    assert store.verify() == []
    assert store.add("t", ckpt(9)).number == 4  # numbers are never given out twice
    assert run("fsck") == (0, "ok\n", "")
    # The removed version's blob is the only one left to collect, and no other blob was deleted.
    assert run("gc", "--grace", "0") == (0, "removed 1 blob(s)\n", "")
    assert set(blobs_before) - set(_blob_files(store_dir)) == {
        next(k for k in blobs_before if k.endswith(_digest_of(ckpt(2))))}


def _digest_of(path) -> str:
    from vopstore.core import sha256_file

    return sha256_file(path)


def test_a_zero_length_database_beside_blobs_is_refused_in_one_line(ckpt, vopstore_home):
    store = open_store()
    store.add("t", ckpt(1))
    store.close()
    (vopstore_home / "store" / "store.db").write_bytes(b"")
    with pytest.raises(StoreUnavailableError, match="database is empty but the blob store") as err:
        open_store()
    assert "\n" not in str(err.value) and "vopstore fsck --rebuild" in str(err.value)


def test_an_empty_database_beside_blobs_without_an_id_is_refused(ckpt, tmp_path):
    """Blobs of a store from before store ids: still data, so an empty database may not claim them."""
    store = open_store(tmp_path.as_uri())
    store.add("t", ckpt(1))
    store.close()
    (tmp_path / "blobs" / STORE_ID_KEY).unlink()
    (tmp_path / "store.db").unlink()
    with pytest.raises(StoreUnavailableError, match="without an id"):
        open_store(tmp_path.as_uri())


def test_a_foreign_database_is_refused(ckpt, tmp_path):
    a, b = open_store((tmp_path / "a").as_uri()), open_store((tmp_path / "b").as_uri())
    a.add("t", ckpt(1))
    b.add("t", ckpt(2))
    a.close(), b.close()
    shutil.copyfile(tmp_path / "a" / "store.db", tmp_path / "b" / "store.db")
    with pytest.raises(StoreUnavailableError, match="belongs to store") as err:
        open_store((tmp_path / "b").as_uri())
    assert "\n" not in str(err.value) and "fsck --rebuild" in str(err.value)
    assert any("belongs to store" in p for p in check_store((tmp_path / "b").as_uri()))
    report = rebuild_store((tmp_path / "b").as_uri())  # the foreign file is moved aside, b's own versions return
    assert report.moved_aside and ".foreign-" in report.moved_aside
    rebuilt = open_store((tmp_path / "b").as_uri())
    assert [v.digest for v in rebuilt.list_versions("t")] == [_digest_of(tmp_path / "ckpts" / "p2-16.safetensors")]


def test_a_fresh_store_claims_one_id_in_both_and_a_new_blob_folder_gets_it(registry, store_spec, tmp_path):
    store_id = database_id(registry)
    assert store_id and blob_store_id(registry.blobs) == store_id
    assert database_id(store_spec.open()) == store_id  # reopening keeps it
    if store_spec.blobs:  # a database URL + blobs: a new, empty blob folder is claimed with the database's id
        other = open_store(store_spec.url, blobs=(tmp_path / "new-blobs").as_uri())
        assert blob_store_id(other.blobs) == store_id


def test_manifest_and_records_beside_the_blob(registry, ckpt):
    info = registry.add("t", ckpt(1), metrics={"r1": 2.5}, message="m", training_config={"lr": 1})
    registry.tag("t@v1", "prod")
    registry.untag("t", "prod")
    keys = list(registry.blobs.list("local/"))
    data = json.loads(registry.blobs.get("local/manifests/t/v1.json"))
    assert data["digest"] == info.digest and data["number"] == 1 and data["metrics"] == {"r1": 2.5}
    assert data["backbone"] == {"name": "tiny", "fingerprint": info.backbone_fingerprint}
    assert {"tenant", "task", "size", "method", "method_config", "dtype", "params", "training_config", "message",
            "parent", "created_at", "created_by"} <= set(data)
    moves = sorted(k for k in keys if k.startswith("local/aliases/t/prod/"))
    assert [json.loads(registry.blobs.get(k))["version"] for k in moves] == [
        {"number": 1, "digest": info.digest}, None]
    assert not registry.blobs.put("local/manifests/t/v1.json", b"{}")  # create-only


def test_rebuild_on_any_database_restores_versions_and_aliases(store_spec, ckpt):
    """SQLite directory store, and PostgreSQL + local blobs: the database is emptied, then rebuilt."""
    store = store_spec.open()
    _populate(store, ckpt)
    _more(store, ckpt)
    expected = _state(store)
    store.close()
    if store_spec.kind == "sqlite":
        (_dir_of(store_spec.url) / "store.db").unlink()  # the directory store's database is lost
    else:
        _empty_postgres(store_spec.url)
    with pytest.raises(StoreUnavailableError, match="fsck --rebuild"):
        store_spec.open()
    report = rebuild_store(store_spec.url, blobs=store_spec.blobs)
    assert report.problems == [] and len(report.restored) == len(expected)
    store = store_spec.open()
    assert _state(store) == expected
    with pytest.raises(VersionNotFoundError):
        store.resolve("t@v2")  # removed before the loss: its tombstone keeps it removed
    assert check_store(store_spec.url, blobs=store_spec.blobs) == []
    assert store.gc(grace_s=0) == 1 and store.verify() == []


def _dir_of(url: str):
    from vopstore.store.open import _dir_path

    return _dir_path(url)


def _empty_postgres(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    from vopstore.db.models import Base

    parts = make_url(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with psycopg.connect(host=parts.host, port=parts.port, user=parts.username, dbname=parts.database,
                         autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def test_pulling_a_removed_version_again_lifts_its_tombstone(ckpt, tmp_path, vopstore_home):
    from vopstore.store import pull

    remote = open_store((tmp_path / "remote").as_uri())
    remote.add("t", ckpt(1))
    local = open_store()
    pull(remote, local, "t@v1")
    local.remove("t@v1")
    assert local.blobs.exists("local/removed/t/v1.json")
    pull(remote, local, "t@v1")
    assert not local.blobs.exists("local/removed/t/v1.json")
    local.close()
    (vopstore_home / "store" / "store.db").unlink()
    rebuild_store()
    assert open_store().resolve("t").number == 1


def test_fsck_reports_missing_manifests_and_versions_the_database_lacks(run, ckpt, vopstore_home):
    store = open_store()
    store.add("t", ckpt(1))
    store.close()
    backup = vopstore_home / "backup.db"
    shutil.copyfile(vopstore_home / "store" / "store.db", backup)
    store = open_store()
    store.add("t", ckpt(2))
    store.close()
    (vopstore_home / "store" / "blobs" / "local" / "manifests" / "t" / "v1.json").unlink()
    shutil.copyfile(backup, vopstore_home / "store" / "store.db")
    code, out, err = run("fsck")
    assert code == 1 and "2 problem(s)" in err
    assert "local/t@v1: no manifest" in out and "local/t@v2: recorded in the blob store but missing" in out
    code, out, _ = run("fsck", "--rebuild")
    assert code == 0 and "restored local/t@v2" in out and "recorded manifest of local/t@v1" in out
    assert run("fsck") == (0, "ok\n", "")


def test_gc_grace_covers_blobs_without_a_row(registry):
    digest = "cd" * 32
    key = f"local/sha256/cd/{digest}"
    registry.blobs.put(key, b"an upload whose version row is not written yet")
    assert registry.gc(grace_s=3600) == 0 and registry.blobs.exists(key)
    old = time.time() - 7200
    os.utime(registry.blobs.path(key), (old, old))
    assert registry.gc(grace_s=3600) == 1 and not registry.blobs.exists(key)


@pytest.mark.parametrize("grace", ["nan", "inf", "-1", "-1e300"])
def test_gc_rejects_a_grace_that_is_not_a_finite_non_negative_number(run, ckpt, grace):
    run("add", "t", str(ckpt(1)))
    _one_line_error(*run("gc", "--grace", grace), "grace")
    with pytest.raises(ConfigError, match="gc grace must be a finite number of seconds >= 0"):
        open_store().gc(grace_s=float(grace))


def test_gc_huge_grace_keeps_everything(registry, ckpt):
    registry.remove(registry.add("t", ckpt(1)).ref)
    assert registry.gc(grace_s=1e300) == 0


def test_gc_refuses_to_delete_most_of_the_store_without_force(run, ckpt):
    for seed in range(4):
        run("add", "t", str(ckpt(seed)))
    for number in (1, 2, 3):
        run("rm", f"t@v{number}")
    _one_line_error(*run("gc", "--grace", "0"), "gc --force")
    assert run("gc", "--grace", "0", "--dry-run") == (0, "would remove 3 blob(s)\n", "")
    assert run("gc", "--grace", "0", "--force") == (0, "removed 3 blob(s)\n", "")
    with pytest.raises(ConflictError):  # the same guard in the library
        store = open_store()
        for seed in range(10, 13):
            store.remove(store.add("t", ckpt(seed)).ref)
        store.gc(grace_s=0)
    assert open_store().gc(grace_s=0, force=True) == 3


def test_gc_refuses_when_the_blob_store_records_versions_the_database_lacks(registry, ckpt):
    registry.add("t", ckpt(1))
    registry.blobs.put("local/manifests/t/v7.json", b"{}")  # as left by a version an older backup lacks
    with pytest.raises(ConflictError, match="local/t@v7") as err:
        registry.gc(grace_s=0)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("target", ["store/store.db", "store", "store/blobs/x.safetensors", "store/../store/new"])
def test_export_into_the_store_is_refused(run, ckpt, vopstore_home, target):
    run("add", "t", str(ckpt(1)))
    _one_line_error(*run("export", "t@v1", str(vopstore_home / target)), "store's own folder")
    assert (vopstore_home / "store" / "store.db").read_bytes().startswith(b"SQLite format 3\x00")
    assert not (vopstore_home / "store" / "blobs" / "x.safetensors").exists()
    assert open_store().resolve("t@v1").number == 1


def _forget_identity(store_dir) -> None:
    """Make the database look like one written before store ids existed (migration 0003 leaves it empty)."""
    from sqlalchemy import text

    from vopstore.db import make_engine

    engine = make_engine(f"sqlite:///{store_dir / 'store.db'}")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM store_identity"))
    engine.dispose()


def test_a_store_from_before_ids_is_claimed_on_open(ckpt, tmp_path):
    store = open_store(tmp_path.as_uri())
    store.add("t", ckpt(1))
    store.close()
    _forget_identity(tmp_path)
    (tmp_path / "blobs" / STORE_ID_KEY).unlink()
    store = open_store(tmp_path.as_uri())
    assert database_id(store) == blob_store_id(store.blobs) is not None
    assert store.resolve("t").number == 1


def test_an_id_less_backup_beside_a_store_with_an_id_is_refused_then_rebuilt(ckpt, tmp_path):
    store = open_store(tmp_path.as_uri())
    store.add("t", ckpt(1))
    store.add("t", ckpt(2))
    store.close()
    _forget_identity(tmp_path)
    with pytest.raises(StoreUnavailableError, match="no store id") as err:
        open_store(tmp_path.as_uri())
    assert "\n" not in str(err.value) and "fsck --rebuild" in str(err.value)
    assert rebuild_store(tmp_path.as_uri()).restored == []  # nothing was missing: only the id is written
    assert [v.number for v in open_store(tmp_path.as_uri()).list_versions("t")] == [1, 2]


def test_an_unreadable_blob_store_defers_the_check_to_the_first_write(ckpt, tmp_path, monkeypatch):
    """Reads that need only the database work offline; gc and add still check the identity first."""
    from vopstore.blobs.local import LocalBlobs

    store = open_store(tmp_path.as_uri())
    store.add("t", ckpt(1))
    store.close()
    blobs_before = _blob_files(tmp_path)
    (tmp_path / "store.db").unlink()
    real_get = LocalBlobs.get
    monkeypatch.setattr(LocalBlobs, "get", lambda self, key: (_ for _ in ()).throw(
        StoreUnavailableError("the blob store is unreachable")))
    lost = open_store(tmp_path.as_uri())
    assert lost.list_tasks() == []
    monkeypatch.setattr(LocalBlobs, "get", real_get)
    with pytest.raises(StoreUnavailableError, match="fsck --rebuild"):
        lost.gc(grace_s=0)
    with pytest.raises(StoreUnavailableError, match="fsck --rebuild"):
        lost.add("t", ckpt(2))
    assert _blob_files(tmp_path) == blobs_before
