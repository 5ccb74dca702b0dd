"""Start-up cost of the everyday commands, and the sqlite3 reader that `ls` and `show` use.

The reader must answer exactly like the registry (same infos, same errors), and hand
over to it whenever the store is not ready for a plain read.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.fixtures.stores import make_checkpoint

HEAVY = ("sqlalchemy", "alembic", "torch", "transformers", "rich")


def _populated(home, tmp_path) -> None:
    """A local store with two tenants, aliases, metadata on a version, and an empty task (all versions removed)."""
    from vopstore.store import open_store

    store = open_store()
    for i in range(3):
        store.add("t", make_checkpoint(tmp_path / f"c{i}.safetensors", seed=i),
                  metrics={"r1": 40.0 + i} if i == 1 else None, message="second" if i == 1 else None,
                  training_config={"lr": 0.001} if i == 1 else None, parent="t@v1" if i == 1 else None)
    store.tag("t@v2", "prod")
    store.tag("t@v2", "best")
    store.tag("t@v3", "canary")
    store.add("acme/u", make_checkpoint(tmp_path / "c9.safetensors", seed=9))
    store.add("gone", make_checkpoint(tmp_path / "c8.safetensors", seed=8))
    store.remove("gone@v1")
    store.close()


def _child(code: str, home) -> list[str]:
    """Run ``code`` in a fresh interpreter against ``home``; its last line of output, split."""
    env = {"VOPSTORE_HOME": str(home), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1].split()


@pytest.mark.parametrize("argv", [["ls"], ["ls", "t"], ["show", "t@prod"], ["show", "acme/u"]])
def test_read_commands_import_no_database_library(argv, vopstore_home, tmp_path):
    _populated(vopstore_home, tmp_path)
    code = ("import sys; from vopstore.cli.app import main; code = main(%r); "
            "print(code, *[m for m in %r if m in sys.modules])" % (argv, HEAVY))
    assert _child(code, vopstore_home) == ["0"]


def test_tag_imports_neither_alembic_nor_torch(vopstore_home, tmp_path):
    _populated(vopstore_home, tmp_path)
    code = ("import sys; from vopstore.cli.app import main; code = main(['tag', 't@v1', 'old']); "
            "print(code, *[m for m in ('alembic', 'torch', 'transformers') if m in sys.modules])")
    assert _child(code, vopstore_home) == ["0"]


def test_command_modules_name_what_they_register():
    import importlib

    from vopstore.cli.app import COMMAND_MODULES, app

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    added: dict[str, set[str]] = {}
    for command in app.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        added.setdefault(command.callback.__module__, set()).add(name)
    for group in app.registered_groups:
        owner = {c.callback.__module__ for c in group.typer_instance.registered_commands}
        assert len(owner) == 1, group.name
        added.setdefault(owner.pop(), set()).add(group.name)
    assert added.pop("vopstore.cli.app") == {"version"}
    assert added == {module: set(names) for module, names in COMMAND_MODULES.items()}


def test_reader_answers_like_the_registry(vopstore_home, tmp_path):
    from vopstore.store import open_reader, open_store
    from vopstore.store.reader import SqliteReader

    _populated(vopstore_home, tmp_path)
    reader, registry = open_reader(), open_store()
    assert isinstance(reader, SqliteReader)
    assert reader.list_tasks() == registry.list_tasks()
    assert [t.ref for t in reader.list_tasks()] == ["acme/u", "local/gone", "local/t"]
    for task in ("t", "local/t", "acme/u", "gone"):
        assert reader.list_versions(task) == registry.list_versions(task)
    for ref in ("t", "t@v1", "t@v2", "t@prod", "t@best", "t@canary", "t@latest", "acme/u", "acme/u@v1"):
        assert reader.resolve(ref) == registry.resolve(ref), ref
    shown = reader.resolve("t@prod")
    assert (shown.aliases, shown.metrics, shown.message, shown.parent) == (("best", "prod"), {"r1": 41.0},
                                                                           "second", "local/t@v1")
    assert reader._registry is None  # every answer above came from sqlite3
    registry.close()


@pytest.mark.parametrize("call", [("resolve", "t@v9"), ("resolve", "t@nope"), ("resolve", "nope"),
                                  ("resolve", "gone"), ("list_versions", "nope"), ("resolve", "Bad Ref")])
def test_reader_misses_raise_the_registrys_errors(call, vopstore_home, tmp_path):
    from vopstore.store import open_reader, open_store

    _populated(vopstore_home, tmp_path)
    method, arg = call
    with pytest.raises(Exception) as by_registry:
        getattr(open_store(), method)(arg)
    with pytest.raises(type(by_registry.value)) as by_reader:
        getattr(open_reader(), method)(arg)
    assert str(by_reader.value) == str(by_registry.value)


def test_scoped_reader_lists_and_refuses_like_a_scoped_registry(vopstore_home, tmp_path):
    from vopstore.errors import PermissionDeniedError
    from vopstore.store import open_reader, open_store

    _populated(vopstore_home, tmp_path)
    reader, registry = open_reader(tenant="acme"), open_store(tenant="acme")
    assert reader.list_tasks() == registry.list_tasks() and [t.ref for t in reader.list_tasks()] == ["acme/u"]
    assert reader.resolve("u") == registry.resolve("u")
    with pytest.raises(PermissionDeniedError) as refused:
        reader.resolve("local/t")
    with pytest.raises(PermissionDeniedError) as by_registry:
        registry.resolve("local/t")
    assert str(refused.value) == str(by_registry.value)


def test_reader_hands_a_store_whose_blobs_belong_elsewhere_to_the_full_open(vopstore_home, tmp_path):
    from vopstore.errors import StoreUnavailableError
    from vopstore.store import open_reader
    from vopstore.store.reader import STORE_ID_FILE

    _populated(vopstore_home, tmp_path)
    (vopstore_home / "store" / "blobs").joinpath(*STORE_ID_FILE).write_text(json.dumps({"store_id": "another"}))
    with pytest.raises(StoreUnavailableError, match="fsck --rebuild"):
        open_reader()


def test_reader_of_a_new_store_creates_it_like_open_store(vopstore_home):
    from vopstore.store import open_reader

    assert open_reader().list_tasks() == []
    assert (vopstore_home / "store" / "store.db").is_file()


def test_reader_finds_the_store_id_where_the_blob_store_keeps_it(tmp_path):
    from vopstore.blobs.local import LocalBlobs
    from vopstore.store.identity import STORE_ID_KEY
    from vopstore.store.reader import STORE_ID_FILE

    assert LocalBlobs(tmp_path).path(STORE_ID_KEY) == tmp_path.joinpath(*STORE_ID_FILE)
