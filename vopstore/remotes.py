"""Named remotes, kept in ``config.toml`` in VOPSTORE_HOME.

Example::

    [remotes.origin]
    url = "postgresql+psycopg://user@db/vopstore"
    blobs = "s3://bucket/prefix"

    [remotes.backup]
    url = "file:///mnt/backup/vopstore"

    [remotes.team]
    url = "https://registry.example.com"
    token = "vop_..."          # the file is written with mode 0600
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomli_w

from vopstore.core import atomic_write_bytes
from vopstore.errors import ConfigError, NotFoundError
from vopstore.home import config_path
from vopstore.refs import validate_name

_URL_SCHEMES = ("file://", "sqlite://", "postgresql", "http://", "https://")


@dataclass(frozen=True)
class Remote:
    """A named remote store: a directory store URL, or a database URL plus a blob URL."""

    name: str
    url: str
    blobs: str | None = None
    token: str | None = field(default=None, repr=False)  # an API token for an https:// registry

    def __post_init__(self) -> None:
        validate_name(self.name, "remote name")
        if not self.url.startswith(_URL_SCHEMES):
            raise ConfigError(
                f"remote {self.name!r}: unsupported URL {self.url!r}; use file:///dir, sqlite:///file "
                "or postgresql+psycopg://... with --blobs"
            )
        if self.url.startswith(("postgresql", "sqlite://")) and not self.blobs:
            raise ConfigError(f"remote {self.name!r}: a database URL needs a blob URL too; pass --blobs s3://bucket/prefix")


@dataclass
class Config:
    """The parsed ``config.toml``."""

    remotes: dict[str, Remote] = field(default_factory=dict)

    def remote(self, name: str) -> Remote:
        """Return the remote called ``name`` or raise NotFoundError."""
        if name not in self.remotes:
            known = ", ".join(sorted(self.remotes)) or "none"
            raise NotFoundError(f"no remote named {name!r} (known: {known}); add one with 'vopstore remote add NAME URL'")
        return self.remotes[name]


def load_config(path: Path | None = None) -> Config:
    """Read ``config.toml``; a missing file is an empty config."""
    path = path or config_path()
    if not path.is_file():
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix or delete the file") from None
    remotes = {}
    table = raw.get("remotes", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: 'remotes' must be a table of [remotes.NAME] sections, got a "
                          f"{type(table).__name__}; fix or delete the file")
    for name, entry in table.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ConfigError(f"{path}: remote {name!r} needs a 'url' string")
        for key in ("blobs", "token"):
            if not isinstance(entry.get(key, ""), str):
                raise ConfigError(f"{path}: remote {name!r}: '{key}' must be a string")
        try:
            remotes[name] = Remote(name=name, url=entry["url"], blobs=entry.get("blobs"), token=entry.get("token"))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return Config(remotes=remotes)


def save_config(config: Config, path: Path | None = None) -> None:
    """Write ``config.toml`` atomically."""
    remotes = {}
    for name, remote in sorted(config.remotes.items()):
        remotes[name] = {k: v for k, v in asdict(remote).items() if k != "name" and v is not None}
    # Private: a database URL may carry a password.
    atomic_write_bytes(path or config_path(), tomli_w.dumps({"remotes": remotes}).encode("utf-8"), mode=0o600)


def add_remote(name: str, url: str, blobs: str | None = None, path: Path | None = None,
               token: str | None = None) -> Remote:
    """Add or replace the remote ``name`` in ``config.toml`` (mode 0600: it may hold a token) and return it."""
    remote = Remote(name=name, url=url, blobs=blobs, token=token)
    if token and not url.startswith(("http://", "https://")):
        raise ConfigError(f"remote {name!r}: a token is for an https:// registry; a database remote uses its URL's "
                          "credentials")
    if blobs and url.startswith("file://"):
        raise ConfigError(f"remote {name!r}: a directory store keeps its blobs in its own folder; "
                          "drop --blobs (it is only for database URLs)")
    config = load_config(path)
    config.remotes[name] = remote
    save_config(config, path)
    return remote
