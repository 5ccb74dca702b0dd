"""VOPSTORE_HOME layout and config.toml remotes."""

from __future__ import annotations

from pathlib import Path

import pytest

from vopstore.remotes import Remote, add_remote, load_config
from vopstore.errors import ConfigError, InvalidRefError, NotFoundError
from vopstore.home import cache_dir, config_path, home_dir, local_store_dir
from vopstore.store import open_remote, open_store


def test_home_layout(vopstore_home, monkeypatch):
    assert home_dir() == vopstore_home and config_path() == vopstore_home / "config.toml"
    assert local_store_dir() == vopstore_home / "store" and cache_dir() == vopstore_home / "cache"
    monkeypatch.delenv("VOPSTORE_HOME")
    assert home_dir() == Path.home() / ".vopstore"


def test_local_store_lives_in_home(vopstore_home, ckpt):
    open_store().add("t", ckpt(1))
    assert (vopstore_home / "store" / "store.db").is_file()
    assert any((vopstore_home / "store" / "blobs").rglob("*"))


def test_remotes_round_trip(vopstore_home, tmp_path, ckpt):
    add_remote("origin", "postgresql+psycopg://db/vop", blobs="s3://bucket/prefix")
    add_remote("backup", (tmp_path / "b").as_uri())
    add_remote("backup", (tmp_path / "c").as_uri())  # replaced, not duplicated
    config = load_config()
    assert config.remote("origin") == Remote("origin", "postgresql+psycopg://db/vop", "s3://bucket/prefix")
    assert sorted(config.remotes) == ["backup", "origin"]
    assert 'blobs = "s3://bucket/prefix"' in (vopstore_home / "config.toml").read_text()
    open_remote("backup").add("t", ckpt(1))
    assert (tmp_path / "c" / "store.db").is_file()
    with pytest.raises(NotFoundError, match="vopstore remote add"):
        load_config().remote("nope")


@pytest.mark.parametrize("name, url, blobs, error", [
    ("Bad Name", "file:///x", None, InvalidRefError),
    ("r", "ftp://host/x", None, ConfigError),
    ("r", "postgresql+psycopg://db/vop", None, ConfigError),
    ("r", "file:///x", "s3://bucket/prefix", ConfigError),  # a directory store has its own blobs
])
def test_bad_remotes(name, url, blobs, error):
    with pytest.raises(error):
        add_remote(name, url, blobs)


def test_bad_config_file(vopstore_home):
    vopstore_home.mkdir(parents=True)
    (vopstore_home / "config.toml").write_text("[remotes.origin\nurl=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config()
    (vopstore_home / "config.toml").write_text("[remotes.origin]\nblobs = 's3://b'\n")
    with pytest.raises(ConfigError, match="'url'"):
        load_config()


def test_config_file_stays_private(vopstore_home):
    import stat

    add_remote("origin", "postgresql+psycopg://user:secret@db/vop", blobs="s3://bucket/prefix")
    assert stat.S_IMODE((vopstore_home / "config.toml").stat().st_mode) == 0o600
