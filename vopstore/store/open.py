"""``open_store``: the one way in to a store, local or remote.

* ``None``: the local store in ``$VOPSTORE_HOME/store`` (created and upgraded on first use);
* ``file:///dir`` or a folder path: a directory store (``dir/store.db`` + ``dir/blobs``), also auto-upgraded;
* ``sqlite:///file`` or ``postgresql+psycopg://...`` plus ``blobs=`` (``file:///...`` or ``s3://bucket/prefix``);
* ``https://host``: a registry server, reached with ``token`` (default: ``$VOPSTORE_TOKEN``).
  A shared PostgreSQL database is never migrated implicitly: ``vopstore db upgrade --url URL`` does that.

``open_reader`` is the same store for callers that only read (``vopstore ls``, ``show``): a
directory store that is ready is read with sqlite3, without importing SQLAlchemy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from vopstore.db import ensure_head, make_engine, redact, require_head, translate_errors
from vopstore.errors import ConfigError
from vopstore.home import local_store_dir
from vopstore.store.reader import SqliteReader

if TYPE_CHECKING:  # for readers of the signatures; importing the Protocol costs `vopstore ls` time
    from vopstore.store.registry import Registry

_DB_SCHEMES = ("sqlite", "postgresql")


def open_store(url: str | None = None, tenant: str | None = None, *, blobs: str | None = None,
               token: str | None = None) -> Registry:
    """Open a store.

    Args:
        url: see the module docstring; None is the local store.
        tenant: scope the registry to this tenant (it then reaches only that tenant's tasks).
        blobs: blob store URL, required with a database URL.
        token: an API token; scopes the registry to the token's tenant (for https://, the only credential).

    Raises:
        ConfigError: malformed or unsupported URL; StoreUnavailableError: database unreachable or not upgraded.
    """
    if url is None:
        return _open_dir(local_store_dir(), tenant, token, url="local")
    if url.startswith(("http://", "https://")):
        from vopstore.store.http import HttpRegistry  # httpx: only for a registry server

        return HttpRegistry(url, token, tenant=tenant)
    if url.startswith(_DB_SCHEMES):
        if not blobs:
            raise ConfigError("a database URL needs a blob store too: open_store(url, blobs='s3://bucket/prefix')")
        return _open_db(url, blobs, tenant, token, auto_upgrade=url.startswith("sqlite"))
    if "://" in url and not url.startswith("file://"):
        raise ConfigError(f"unsupported store URL {url!r}: use file:///dir, sqlite:///file or postgresql+psycopg://...")
    return _open_dir(_dir_path(url), tenant, token, url=url)


def open_reader(url: str | None = None, tenant: str | None = None) -> SqliteReader | Registry:
    """The store ``url`` names, for ``resolve``, ``list_tasks`` and ``list_versions`` only.

    A directory store (the local one, ``file:///dir`` or a folder) whose database is at the
    schema head and matches its blobs is read with sqlite3 (a few ms; SQLAlchemy and
    Alembic stay unimported); every other store, and every miss or error, goes through
    :func:`open_store` and answers exactly as it does.
    """
    folder = _directory_store(url)
    reader = None if folder is None else SqliteReader.open(folder, url or "local", tenant,
                                                           lambda: open_store(url, tenant))
    return reader if reader is not None else open_store(url, tenant)


def _directory_store(url: str | None) -> Path | None:
    if url is None:
        return local_store_dir()
    if url.startswith(("http://", "https://", *_DB_SCHEMES)) or ("://" in url and not url.startswith("file://")):
        return None
    return _dir_path(url)


def _dir_path(url: str) -> Path:
    if url.startswith("file://"):
        from urllib.request import url2pathname  # urllib.request pulls in http.client: only for file URLs

        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{url}: file URLs must be local, e.g. file:///srv/vopstore")
        return Path(url2pathname(parts.path))
    return Path(url).expanduser()


def _open_dir(path: Path, tenant: str | None, token: str | None, url: str) -> Registry:
    path = path.resolve()
    if _read_only(path):  # a read-only home or mount: open for reading; a write fails in one line
        return _open_db(f"sqlite:///{path / 'store.db'}", (path / "blobs").as_uri(), tenant, token,
                        auto_upgrade=False, name=url if url != "local" else str(path), read_only=True)
    path.mkdir(parents=True, exist_ok=True)
    (path / "blobs").mkdir(exist_ok=True)
    return _open_db(f"sqlite:///{path / 'store.db'}", (path / "blobs").as_uri(), tenant, token,
                    auto_upgrade=True, name=url if url != "local" else str(path))


def _read_only(path: Path) -> bool:
    """Whether the directory store at ``path`` exists but this process cannot write it."""
    db = path / "store.db"
    return db.is_file() and not (os.access(path, os.W_OK) and os.access(db, os.W_OK))


def _open_db(db_url: str, blobs_url: str, tenant: str | None, token: str | None, *, auto_upgrade: bool,
             name: str | None = None, read_only: bool = False) -> Registry:
    # SQLAlchemy and the blob backends: `vopstore ls` reads a ready store with sqlite3 and never gets here
    from vopstore.blobs import open_blobs
    from vopstore.store.direct import DirectRegistry
    from vopstore.store.identity import check_identity

    shown = name or redact(db_url)
    engine = make_engine(db_url, read_only=read_only)
    with translate_errors(shown):
        if auto_upgrade:
            ensure_head(engine)
        else:
            require_head(engine, redact(db_url))
    registry = DirectRegistry(engine, open_blobs(blobs_url), url=shown, tenant=tenant)
    with translate_errors(shown):
        check_identity(registry)  # a lost or foreign database beside these blobs is refused, not taken as empty
    if token is not None:
        scoped = registry.tenant_for_token(token)
        if tenant is not None and tenant != scoped:
            raise ConfigError(f"the token belongs to tenant {scoped!r}, not {tenant!r}")
        registry = DirectRegistry(engine, registry.blobs, url=shown, tenant=scoped)
    return registry


def open_remote(name: str, tenant: str | None = None, token: str | None = None) -> Registry:
    """Open the remote called ``name`` in ``config.toml``."""
    from vopstore.remotes import load_config  # TOML: `vopstore ls` on the local store does not read it

    remote = load_config().remote(name)
    return open_store(remote.url, tenant, blobs=remote.blobs, token=token or remote.token)
