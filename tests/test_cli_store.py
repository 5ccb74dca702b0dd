"""The store commands through the real entry point, in-process; one child process checks import cost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.fixtures.stores import checkpoint_bytes
from vopstore.db.migrate import HEAD


def test_add_ls_show_tag_rm(run, ckpt, tmp_path):
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"t2v_r1": 44.6}))
    assert run("add", "msrvtt", str(ckpt(1)), "--metrics", str(metrics), "-m", "first") == (0, "local/msrvtt@v1\n", "")
    assert run("add", "msrvtt", str(ckpt(2)))[1] == "local/msrvtt@v2\n"
    code, out, _ = run("ls")
    assert code == 0 and "local/msrvtt" in out and "v2" in out
    code, out, _ = run("ls", "--json")
    assert json.loads(out)[0]["versions"] == 2
    assert [v["ref"] for v in json.loads(run("ls", "msrvtt", "--json")[1])] == ["local/msrvtt@v1", "local/msrvtt@v2"]
    assert run("tag", "msrvtt@v1", "prod")[0] == 0
    shown = json.loads(run("show", "msrvtt@prod", "--json")[1])
    assert shown["metrics"] == {"t2v_r1": 44.6} and shown["aliases"] == ["prod"] and shown["message"] == "first"
    assert "t2v_r1" in run("show", "msrvtt@prod")[1]
    code, _, err = run("rm", "msrvtt@v1")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "--force" in err
    assert run("untag", "msrvtt", "prod")[0] == 0
    assert run("rm", "msrvtt@v1") == (0, "removed local/msrvtt@v1\n", "")
    assert run("gc", "--grace", "0")[1] == "removed 1 blob(s)\n"


def test_export_and_verify(run, ckpt, tmp_path, vopstore_home):
    run("add", "t", str(ckpt(3)))
    out_file = tmp_path / "out" / "t.safetensors"
    assert run("export", "t@v1", str(out_file))[0] == 0
    assert out_file.read_bytes() == checkpoint_bytes(3)
    assert run("verify") == (0, "ok\n", "")
    assert json.loads(run("verify", "--json")[1]) == {"ok": True, "problems": []}
    blob = next(p for p in (vopstore_home / "store" / "blobs").rglob("*") if p.is_file() and "sha256" in p.parts)
    blob.chmod(0o644)
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    code, out, err = run("verify")
    assert code == 1 and "corrupt" in out and err.startswith("error: 1 version(s) failed")


@pytest.mark.parametrize("args, needle", [
    (("show", "nope"), "no task local/nope"),
    (("show", "Bad@@x"), "invalid"),
    (("show", "t@v7"), "does not exist"),
    (("add", "t", "/no/such/file.safetensors"), "no such file"),
    (("push", "t", "--remote", "nowhere"), "no remote named 'nowhere'"),
    (("db", "upgrade", "--url", "postgresql+psycopg://127.0.0.1:1/x"), "unavailable"),
])
def test_user_errors_are_one_line(run, ckpt, args, needle):
    run("add", "t", str(ckpt(1)))
    code, out, err = run(*args)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_bad_checkpoint_file(run, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(checkpoint_bytes(1)[:-5])
    code, _, err = run("add", "t", str(bad))
    assert code == 1 and "truncated" in err


def test_remote_push_pull(run, ckpt, tmp_path):
    remote = (tmp_path / "remote").as_uri()
    assert run("remote", "add", "origin", remote)[0] == 0
    assert json.loads(run("remote", "ls", "--json")[1]) == [{"name": "origin", "url": remote, "blobs": None}]
    run("add", "t", str(ckpt(1)))
    run("tag", "t@v1", "prod")
    assert run("push", "t@prod") == (0, "pushed local/t@v1 to origin\n", "")
    assert run("push", "t@prod")[0] == 0  # idempotent
    run("rm", "t@v1", "--force")
    assert run("pull", "t@prod") == (0, "pulled local/t@v1 from origin\n", "")
    assert json.loads(run("show", "t@prod", "--json")[1])["ref"] == "local/t@v1"


def test_db_upgrade(run, tmp_path):
    code, out, _ = run("db", "upgrade", "--url", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 0 and f"revision {HEAD}" in out


def test_ls_does_not_import_torch(tmp_path):
    child = ("import sys; from vopstore.cli.app import main; code = main(['ls']); "
             "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    env = {"VOPSTORE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("NO-TORCH 0")


@pytest.mark.postgres
def test_db_upgrade_postgres_then_store_opens(run, postgres_db, tmp_path):
    from vopstore.store import open_store

    code, out, _ = run("db", "upgrade", "--url", postgres_db)
    assert code == 0 and f"revision {HEAD}" in out
    assert open_store(postgres_db, blobs=tmp_path.as_uri()).list_tasks() == []


def test_pull_repairs_a_corrupt_blob_as_the_verify_message_advises(run, ckpt, tmp_path, vopstore_home):
    assert run("remote", "add", "origin", (tmp_path / "remote").as_uri())[0] == 0
    run("add", "t", str(ckpt(1)))
    assert run("push", "t@v1")[0] == 0
    blob = next(p for p in (vopstore_home / "store" / "blobs").rglob("*") if p.is_file() and "sha256" in p.parts)
    blob.chmod(0o644)
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    code, out, _ = run("verify")
    assert code == 1 and "restore it from another store with 'vopstore pull'" in out
    assert run("pull", "t@v1") == (0, "pulled local/t@v1 from origin\n", "")
    assert run("verify") == (0, "ok\n", "")


def test_export_into_a_folder_with_the_usual_file_mode(run, ckpt, tmp_path):
    import os
    import stat

    run("add", "t", str(ckpt(3)))
    (tmp_path / "out").mkdir()
    old = os.umask(0o022)
    try:
        assert run("export", "t@v1", str(tmp_path / "out")) == (0, f"local/t@v1 -> {tmp_path / 'out' / 't-v1.safetensors'}\n", "")
    finally:
        os.umask(old)
    exported = tmp_path / "out" / "t-v1.safetensors"
    assert exported.read_bytes() == checkpoint_bytes(3)
    assert stat.S_IMODE(exported.stat().st_mode) == 0o644  # not mkstemp's 0o600


def test_remote_add_refuses_blobs_for_a_directory_store(run, tmp_path):
    code, out, err = run("remote", "add", "origin", (tmp_path / "r").as_uri(), "--blobs", "s3://bucket/p")
    assert code == 1 and out == "" and err.count("\n") == 1 and "drop --blobs" in err
    assert run("remote", "ls", "--json")[1].strip() == "[]"
