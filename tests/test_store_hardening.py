"""Store hardening (issue 10): invalid content is refused at add/push/import, user errors are one line (never a
traceback), a read-only home can still be read, and a tenant-scoped handle stays in its tenant."""

from __future__ import annotations

import gc
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save

from tests.fixtures.stores import FINGERPRINT, checkpoint_bytes
from vopstore.blobs.base import blob_key
from vopstore.checkpoint import PromptSetMeta
from vopstore.errors import (InvalidCheckpointError, PermissionDeniedError, UnknownMethodError, VersionNotFoundError,
                             VopstoreError)
from vopstore.store import open_store, pull, push


def one_line(result, needle: str = "") -> str:
    code, out, err = result
    assert code == 1 and out == "", result
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err and needle in err, err
    return err


def _bad_vop(**meta_changes) -> bytes:
    """A tiny vop whose visual prompts hold a NaN (or with metadata changed)."""
    tensors = {"text": np.ones((1, 1, 8), np.float32), "visual": np.ones((1, 1, 8), np.float32)}
    if not meta_changes:
        tensors["visual"][0, 0, 3] = np.nan
    fields = dict(method="vop", config={"text_prompts": 1, "visual_prompts": 1}, backbone_name="tiny",
                  backbone_fingerprint=FINGERPRINT, dtype="float32", params=16)
    fields.update(meta_changes)
    return save(tensors, metadata={"vopstore": PromptSetMeta(**fields).to_json()})


# -- invalid content: add, push (import on the remote), pull (import here), upload --------------------------------


def test_add_refuses_invalid_contents_and_stores_nothing(registry, tmp_path):
    cases = {"nan": (_bad_vop(), InvalidCheckpointError), "unknown-key": (_bad_vop(config={"prompts": 2}),
             InvalidCheckpointError), "unknown-method": (_bad_vop(method="vop-x"), UnknownMethodError)}
    for name, (data, error) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(error) as err:
            registry.add("t", tmp_path / name)
        assert "\n" not in str(err.value) and str(err.value).startswith(str(tmp_path / name))
        with pytest.raises(error):
            registry.add_bytes("t", data)
        with pytest.raises(error):
            registry.upload(data)
    assert registry.list_tasks() == [] and list(registry.blobs.list("")) == [
        k for k in registry.blobs.list("") if k.startswith("_vopstore/")]


def test_push_and_pull_refuse_invalid_contents(tmp_path, monkeypatch):
    local, remote = open_store(str(tmp_path / "a")), open_store(str(tmp_path / "b"))
    (tmp_path / "nan.st").write_bytes(_bad_vop())
    with monkeypatch.context() as legacy:  # a version stored before the check existed
        legacy.setattr("vopstore.prompts.schema.check_prompt_set", lambda *args, **kwargs: None)
        local.add("t", tmp_path / "nan.st")
        remote.add("u", tmp_path / "nan.st")
    with pytest.raises(InvalidCheckpointError, match="NaN"):
        push(local, remote, "t@v1")
    with pytest.raises(InvalidCheckpointError, match="NaN"):
        pull(remote, local, "u@v1")
    assert [t.ref for t in remote.list_tasks()] == ["local/u"] and [t.ref for t in local.list_tasks()] == ["local/t"]


def test_cli_add_of_invalid_contents_is_one_line(run, tmp_path):
    (tmp_path / "nan.st").write_bytes(_bad_vop())
    one_line(run("add", "t", str(tmp_path / "nan.st")), "NaN or infinite")
    (tmp_path / "x.st").write_bytes(_bad_vop(method="vop-x"))
    one_line(run("add", "t", str(tmp_path / "x.st")), "unknown prompt method 'vop-x'")
    assert run("ls", "--json")[1].strip() == "[]"


# -- errors that were tracebacks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.parametrize("command", [("ls",), ("show", "t"), ("verify",), ("gc",), ("ls", "t")])
def test_a_corrupt_sqlite_file_is_one_line_saying_how_to_recover(run, ckpt, vopstore_home, damage, command):
    assert run("add", "t", str(ckpt(1)))[0] == 0
    gc.collect()  # close the add's connections now: a late close would checkpoint its WAL over the damage
    db = vopstore_home / "store" / "store.db"
    for suffix in ("-wal", "-shm"):
        (db.parent / f"store.db{suffix}").unlink(missing_ok=True)
    data = db.read_bytes()
    db.write_bytes(b"this is not a database " * 200 if damage == "garbage" else data[:5000])
    err = one_line(run(*command), "corrupt")
    assert "vopstore fsck --rebuild" in err


def test_version_selectors_say_what_is_wrong(run, ckpt):
    run("add", "t", str(ckpt(1)))
    assert "from v1 up" in one_line(run("show", "t@v-1"))
    assert "out of range" in one_line(run("show", "t@v9999999999"))
    assert "leading zeros" in one_line(run("show", "t@v01"))
    assert "reserved" in one_line(run("tag", "t@v1", "v-1"))


def test_add_of_a_folder_says_it_is_a_folder(run, tmp_path):
    assert "is a folder" in one_line(run("add", "t", str(tmp_path)))
    assert "is a folder" in one_line(run("add", "t", str(tmp_path), "--metrics", str(tmp_path)))


def test_rm_force_names_the_aliases_it_dropped(run, ckpt):
    run("add", "t", str(ckpt(1)))
    run("tag", "t@v1", "prod")
    run("tag", "t@v1", "canary")
    assert run("rm", "t@v1", "--force") == (0, "removed local/t@v1 and its alias(es) canary, prod\n", "")


def test_deep_metrics_are_one_line(run, ckpt, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    one_line(run("add", "t", str(ckpt(1)), "--metrics", str(deep)), "nests too deeply")
    deep.write_text('{"a":' * 100 + "1" + "}" * 100)
    one_line(run("add", "t", str(ckpt(1)), "--metrics", str(deep)), "nests deeper than 64")
    assert run("ls", "--json")[1].strip() == "[]"


@pytest.mark.parametrize("text", ["remotes = 5", 'remotes = ["a"]', 'remotes = "x"', "[remotes]\norigin = 3",
                                  '[remotes.origin]\nurl = "file:///x"\nblobs = 7', '[remotes.origin]\nurl = "ftp://x"'])
def test_a_malformed_config_is_one_line(run, vopstore_home, text):
    vopstore_home.mkdir(parents=True, exist_ok=True)
    (vopstore_home / "config.toml").write_text(text)
    one_line(run("remote", "ls"))
    one_line(run("push", "t", "--remote", "origin"))


def test_a_read_only_home_can_be_read(run, ckpt, tmp_path, vopstore_home, monkeypatch):
    assert run("add", "t", str(ckpt(1)))[0] == 0 and run("tag", "t@v1", "prod")[0] == 0
    for path in [vopstore_home, *vopstore_home.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        if os.geteuid() == 0:  # root writes anyway: make vopstore see what any other user would
            real_access = os.access
            monkeypatch.setattr("vopstore.store.open.os.access", lambda p, mode: False if (
                mode & os.W_OK and str(p).startswith(str(vopstore_home))) else real_access(p, mode))
            monkeypatch.setattr("vopstore.store.cache.atomic_write_bytes", _deny)
        assert "local/t" in run("ls")[1]
        assert json.loads(run("show", "t@prod", "--json")[1])["ref"] == "local/t@v1"
        assert run("export", "t@prod", str(tmp_path / "out.st"))[0] == 0
        assert (tmp_path / "out.st").read_bytes() == checkpoint_bytes(1)
        assert run("verify") == (0, "ok\n", "")
        err = one_line(run("tag", "t@v1", "staging"))
        assert "read-only" in err and "server is running" not in err
    finally:
        for path in [vopstore_home, *vopstore_home.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


def _deny(path, *args, **kwargs):
    raise PermissionError(13, "Permission denied", str(path))


# -- tenant scoping in the library --------------------------------------------------------------------------------


def test_a_scoped_handle_cannot_widen_its_scope(store_spec, ckpt):
    admin = store_spec.open()
    info = admin.add("other/t", ckpt(2))
    acme = store_spec.open(tenant="acme")
    acme.add("t", ckpt(1))
    with pytest.raises(AttributeError):
        acme.tenant = None
    assert acme.tenant == "acme" and acme.default_tenant == "acme"
    with pytest.raises(PermissionDeniedError):
        acme.blobs.get(blob_key("other", info.digest))
    with pytest.raises(PermissionDeniedError):
        acme.blobs.exists("other/manifests/t/v1.json")
    with pytest.raises(PermissionDeniedError):
        list(acme.blobs.list("other/"))
    assert all(key.startswith("acme/") for key in acme.blobs.list())
    acme.blobs = admin.blobs  # whatever it is given, a scoped handle reaches its blobs through its tenant
    with pytest.raises(PermissionDeniedError):
        acme.blobs.get(blob_key("other", info.digest))
    with pytest.raises(PermissionDeniedError):
        acme.fetch(info)
    admin.url = "renamed"  # the URL only names the store in messages: it may change
    assert admin.url == "renamed"


def test_the_cache_is_keyed_per_tenant(store_spec, ckpt, tmp_path):
    """A scoped fetch of a digest another tenant cached is read (and verified) from its own tenant's blobs."""
    from vopstore.store import BlobCache

    admin = store_spec.open()
    mine, theirs = admin.add("acme/t", ckpt(1)), admin.add("other/t", ckpt(1))
    assert mine.digest == theirs.digest
    cache = BlobCache(tmp_path / "shared-cache")
    other = store_spec.open(tenant="other")
    other.cache = cache
    assert other.fetch("t").read_bytes() == checkpoint_bytes(1)
    acme = store_spec.open(tenant="acme")
    acme.cache = cache
    acme.blobs.delete(blob_key("acme", mine.digest))  # acme's own copy is gone: the shared cache must not cover it
    with pytest.raises(VopstoreError):
        acme.fetch("t")
    assert cache.path(mine.digest, "acme") != cache.path(mine.digest, "other")


def test_upload_and_import_stay_in_scope(store_spec, ckpt):
    acme = store_spec.open(tenant="acme")
    with pytest.raises(PermissionDeniedError):
        acme.upload(checkpoint_bytes(1), tenant="other")
    with pytest.raises(VersionNotFoundError):
        acme.resolve("t@v1") if acme.add("t", ckpt(1)) and False else acme.resolve("t@v2")
