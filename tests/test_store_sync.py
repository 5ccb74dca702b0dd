"""push / pull between real stores: directory (SQLite), PostgreSQL + S3 (moto), tampering, offline loads."""

from __future__ import annotations

import shutil

import pytest

from tests.fixtures.stores import StoreSpec, checkpoint_bytes
from vopstore.blobs.base import blob_key
from vopstore.errors import BlobIntegrityError, ConflictError, StoreUnavailableError, TaskNotFoundError
from vopstore.store import copy_version, open_store, pull, push


@pytest.fixture
def pg_s3_spec(postgres_store_db, s3_bucket) -> StoreSpec:
    return StoreSpec("postgres", postgres_store_db, f"s3://{s3_bucket}/vop")


def test_push_is_idempotent_and_keeps_numbers(tmp_path, ckpt):
    local, remote = open_store(), open_store((tmp_path / "remote").as_uri())
    local.add("t", ckpt(1))
    local.add("t", ckpt(2))
    info, created = copy_version(local, remote, "t@v2")
    assert created and info.ref == "local/t@v2"
    local.read_blob = None  # a repeated push must not even read the bytes again
    assert copy_version(local, remote, "t@v2")[1] is False
    del local.read_blob
    assert [v.number for v in remote.list_versions("t")] == [2]
    assert remote.resolve("t@v2").digest == local.resolve("t@v2").digest
    assert remote.add("t", ckpt(3)).number == 3  # the remote keeps counting after the copied number


def test_diverged_version_is_refused(tmp_path, ckpt):
    local, remote = open_store(), open_store((tmp_path / "remote").as_uri())
    local.add("t", ckpt(1))
    remote.add("t", ckpt(2))
    with pytest.raises(ConflictError, match="local/t@v1 already exists"):
        push(local, remote, "t@v1")


@pytest.mark.postgres
@pytest.mark.s3
def test_push_to_postgres_s3_then_pull_works_offline(pg_s3_spec, tmp_path, ckpt, s3_env):
    local = open_store()
    remote = pg_s3_spec.open()
    local.add("acme/lsmdc", ckpt(1), metrics={"r1": 30.0})
    local.tag("acme/lsmdc@v1", "prod")
    push(local, remote, "acme/lsmdc@prod")
    assert remote.resolve("acme/lsmdc@prod").metrics == {"r1": 30.0}
    assert remote.verify() == []

    elsewhere = open_store((tmp_path / "second-machine").as_uri())
    info = pull(remote, elsewhere, "acme/lsmdc@prod")
    assert info.aliases == ("prod",)
    for key in list(remote.blobs.list()):  # the remote loses its bytes: later loads must not need it
        remote.blobs.delete(key)
    remote.close()
    assert elsewhere.resolve("acme/lsmdc@prod").digest == info.digest
    assert elsewhere.fetch("acme/lsmdc@prod").read_bytes() == checkpoint_bytes(1)


@pytest.mark.postgres
@pytest.mark.s3
def test_tampered_s3_blob_is_refused(pg_s3_spec, ckpt, s3_env, s3_bucket, tmp_path):
    local, remote = open_store(), pg_s3_spec.open()
    info = local.add("t", ckpt(1))
    push(local, remote, "t@v1")
    key = f"vop/{blob_key(info.tenant, info.digest)}"
    client = s3_env.client()
    data = bytearray(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    data[10] ^= 0xFF
    client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(data))
    assert "corrupt" in remote.verify("t@v1")[0]
    fresh = open_store((tmp_path / "fresh").as_uri())
    with pytest.raises(BlobIntegrityError):
        pull(remote, fresh, "t@v1")
    with pytest.raises(TaskNotFoundError):  # nothing visible was left behind
        fresh.resolve("t")


@pytest.mark.postgres
def test_unreachable_s3_endpoint(postgres_store_db, monkeypatch, ckpt):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    remote = open_store(postgres_store_db, blobs="s3://bucket/prefix")
    local = open_store()
    local.add("t", ckpt(1))
    with pytest.raises(StoreUnavailableError) as err:
        push(local, remote, "t")
    assert "\n" not in str(err.value)
    with pytest.raises(TaskNotFoundError):
        remote.resolve("t")


def test_pull_from_a_deleted_directory_store_still_loads(tmp_path, ckpt):
    remote = open_store((tmp_path / "remote").as_uri())
    remote.add("t", ckpt(5))
    local = open_store()
    pull(remote, local, "t")
    remote.close()
    shutil.rmtree(tmp_path / "remote")
    assert local.fetch("t@v1").read_bytes() == checkpoint_bytes(5)
    assert local.verify() == []


def test_pull_repairs_a_corrupt_local_blob(tmp_path, ckpt):
    remote, local = open_store((tmp_path / "remote").as_uri()), open_store()
    remote.add("t", ckpt(1))
    info = pull(remote, local, "t@v1")
    blob = local.blobs.path(blob_key(info.tenant, info.digest))
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))
    assert "corrupt" in local.verify()[0]
    assert copy_version(remote, local, "t@v1") == (local.resolve("t@v1"), False)  # same version, bytes re-copied
    assert local.verify() == []
    blob.unlink()
    push(remote, local, "t@v1")
    assert local.verify() == [] and local.read_blob(info) == checkpoint_bytes(1)


@pytest.mark.postgres
@pytest.mark.s3
def test_gc_on_s3_skips_keys_it_did_not_make(pg_s3_spec, ckpt, s3_env, s3_bucket):
    remote = pg_s3_spec.open()
    info = remote.add("t", ckpt(1))
    client = s3_env.client()
    for key in ("vop/x/", "vop/README", "vop/local/sha256/zz/readme"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"not a blob")
    orphan = f"vop/{blob_key('local', 'ef' * 32)}"
    client.put_object(Bucket=s3_bucket, Key=orphan, Body=b"orphan")
    assert remote.gc(grace_s=0) == 1
    left = {item["Key"] for item in client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert left == {"vop/x/", "vop/README", "vop/local/sha256/zz/readme", f"vop/{blob_key('local', info.digest)}",
                    "vop/_vopstore/store-id", "vop/local/manifests/t/v1.json"}
