"""Reads of a local directory store with the standard library's sqlite3, for the commands that only read.

``vopstore ls`` and ``vopstore show`` should start as fast as a small CLI, and importing
SQLAlchemy alone costs more CPU than the whole of ``hf version``. When a store's database
is already at the schema head and names the same store id as its blob folder (the checks
``open_store`` makes on every open), these reads run as plain SQL on a read-only
connection. Everything else (a missing, older, foreign or damaged database, a miss that
needs its precise error, a tenant out of scope) is handed to the full registry that
``open_store`` gives, so every answer and every error is the registry's own.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from vopstore.db.migrate import HEAD
from vopstore.refs import DEFAULT_TENANT, Ref, parse_ref, parse_task, validate_name
from vopstore.store.info import TaskInfo, VersionInfo

# The blob folder's copy of the store id, read as a plain file: vopstore.store.identity.STORE_ID_KEY under
# LocalBlobs' key -> path rule (importing either module costs more than this whole read; a test pins both).
STORE_ID_FILE = ("_vopstore", "store-id")
BUSY_TIMEOUT_S = 60

_VERSION_COLUMNS = """
SELECT version.id, tenant.name, task.name, version.number, blob.digest, blob.size, version.method, version.params,
       backbone.name, backbone.fingerprint, version.metrics, version.training_config, version.message,
       version.created_at, version.created_by, version.method_config, version.dtype, version.parent
FROM version JOIN task ON version.task_id = task.id JOIN tenant ON task.tenant_id = tenant.id
JOIN blob ON version.blob_id = blob.id JOIN backbone ON version.backbone_id = backbone.id"""
_BY_NUMBER = f"{_VERSION_COLUMNS} WHERE tenant.name = ? AND task.name = ? AND version.number = ?"
_BY_ALIAS = (f"{_VERSION_COLUMNS} JOIN alias ON alias.version_id = version.id AND alias.task_id = task.id "
             "WHERE tenant.name = ? AND task.name = ? AND alias.name = ?")
_LATEST = f"{_VERSION_COLUMNS} WHERE tenant.name = ? AND task.name = ? ORDER BY version.number DESC LIMIT 1"
_OF_TASK = f"{_VERSION_COLUMNS} WHERE task.id = ? ORDER BY version.number"
_TASK_ID = "SELECT task.id FROM task JOIN tenant ON task.tenant_id = tenant.id WHERE tenant.name = ? AND task.name = ?"
_TASKS = """
SELECT task.id, tenant.name, task.name, count(version.id), max(version.number)
FROM task JOIN tenant ON task.tenant_id = tenant.id LEFT OUTER JOIN version ON version.task_id = task.id
{where} GROUP BY task.id, tenant.name, task.name ORDER BY tenant.name, task.name"""
_TASK_ALIASES = """
SELECT alias.task_id, alias.name, version.number FROM alias JOIN version ON alias.version_id = version.id
JOIN task ON alias.task_id = task.id JOIN tenant ON task.tenant_id = tenant.id {where}"""


class SqliteReader:
    """``resolve``, ``list_tasks`` and ``list_versions`` of a directory store, answered by sqlite3.

    Build it with :meth:`open`; ``full`` opens the real registry for whatever this reader
    hands on (misses, errors, anything out of scope).
    """

    def __init__(self, database: Path, url: str, tenant: str | None, full: Callable[[], object]) -> None:
        self.database, self.url, self.tenant = database, url, tenant
        self._full, self._registry = full, None

    @classmethod
    def open(cls, folder: Path, url: str, tenant: str | None, full: Callable[[], object]) -> SqliteReader | None:
        """A reader for the directory store in ``folder``, or None when the quick checks do not all pass."""
        if tenant is not None:
            validate_name(tenant, "tenant")
        database = Path(folder).resolve() / "store.db"
        if not database.is_file():
            return None  # a new store: open_store creates it
        reader = cls(database, url, tenant, full)
        found = reader._read(_revision_and_store_id)
        return reader if found is not None and found == (HEAD, _blob_store_id(folder)) else None

    def __repr__(self) -> str:
        return f"SqliteReader({self.url!r}, tenant={self.tenant!r})"

    @property
    def default_tenant(self) -> str:
        return self.tenant or DEFAULT_TENANT

    def resolve(self, ref: str) -> VersionInfo:
        """The version ``[tenant/]task[@vN|@alias]`` names, as :meth:`Registry.resolve` answers it."""
        parsed = parse_ref(ref, self.default_tenant)
        info = self._read(lambda db: _find(db, parsed)) if self._in_scope(parsed) else None
        return info if info is not None else self.registry().resolve(ref)

    def list_versions(self, task: str) -> list[VersionInfo]:
        """Every version of ``task``, oldest first."""
        parsed = parse_task(task, self.default_tenant)
        infos = self._read(lambda db: _versions_of(db, parsed)) if self._in_scope(parsed) else None
        return infos if infos is not None else self.registry().list_versions(task)

    def list_tasks(self) -> list[TaskInfo]:
        """Every task in reach, with its version count, latest number and aliases."""
        tasks = self._read(lambda db: _tasks(db, self.tenant))
        return tasks if tasks is not None else self.registry().list_tasks()

    def registry(self):
        """The full registry (opened on first need): writes, fetches, and every answer this reader hands on."""
        if self._registry is None:
            self._registry = self._full()
        return self._registry

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()

    def _in_scope(self, ref: Ref) -> bool:
        return self.tenant is None or ref.tenant == self.tenant

    def _read(self, query: Callable[[sqlite3.Connection], object]):
        """``query``'s answer from one read transaction; None on any SQLite error (the full registry explains it)."""
        try:
            db = sqlite3.connect(f"{self.database.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                                 isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            db.execute("BEGIN")  # one snapshot for the statements of a call
            return query(db)
        except sqlite3.Error:
            return None
        finally:
            db.close()


def _revision_and_store_id(db: sqlite3.Connection) -> tuple[str | None, str | None]:
    """The schema revision (read with plain SQL: no Alembic) and the database's store id."""
    revision = db.execute("SELECT version_num FROM alembic_version").fetchone()
    store_id = db.execute("SELECT store_id FROM store_identity WHERE id = 1").fetchone()
    return (revision and revision[0]), (store_id and store_id[0])


def _blob_store_id(folder: Path) -> str | None:
    """The id in the store's blob folder; None when unreadable, so the full open decides what it means."""
    try:
        return str(json.loads(Path(folder, "blobs", *STORE_ID_FILE).read_bytes())["store_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _find(db: sqlite3.Connection, ref: Ref) -> VersionInfo | None:
    if ref.version is not None:
        row = db.execute(_BY_NUMBER, (ref.tenant, ref.task, ref.version)).fetchone()
    elif ref.alias is not None:
        row = db.execute(_BY_ALIAS, (ref.tenant, ref.task, ref.alias)).fetchone()
    else:
        row = db.execute(_LATEST, (ref.tenant, ref.task)).fetchone()
    if row is None:
        return None
    aliases = db.execute("SELECT name FROM alias WHERE version_id = ? ORDER BY name", (row[0],)).fetchall()
    return _info(row, tuple(name for (name,) in aliases))


def _versions_of(db: sqlite3.Connection, ref: Ref) -> list[VersionInfo] | None:
    found = db.execute(_TASK_ID, (ref.tenant, ref.task)).fetchone()
    if found is None:
        return None
    aliases: dict[int, list[str]] = {}
    for version_id, name in db.execute("SELECT version_id, name FROM alias WHERE task_id = ? ORDER BY name", found):
        aliases.setdefault(version_id, []).append(name)
    return [_info(row, tuple(aliases.get(row[0], ()))) for row in db.execute(_OF_TASK, found)]


def _tasks(db: sqlite3.Connection, tenant: str | None) -> list[TaskInfo]:
    where, params = ("WHERE tenant.name = ?", (tenant,)) if tenant is not None else ("", ())
    aliases: dict[int, dict[str, int]] = {}
    for task_id, name, number in db.execute(_TASK_ALIASES.format(where=where), params):
        aliases.setdefault(task_id, {})[name] = number
    return [TaskInfo(tenant=t, name=n, versions=c, latest=m, aliases=aliases.get(task_id, {}))
            for task_id, t, n, c, m in db.execute(_TASKS.format(where=where), params)]


def _info(row: tuple, aliases: tuple[str, ...]) -> VersionInfo:
    (_, tenant, task, number, digest, size, method, params, backbone_name, backbone_fingerprint, metrics,
     training_config, message, created_at, created_by, method_config, dtype, parent) = row
    return VersionInfo(tenant=tenant, task=task, number=number, digest=digest, size=size, method=method,
                       params=params, backbone_name=backbone_name, backbone_fingerprint=backbone_fingerprint,
                       metrics=_json(metrics), training_config=_json(training_config), message=message,
                       created_at=_utc(created_at), created_by=created_by, aliases=aliases,
                       method_config=_json(method_config), dtype=dtype, parent=parent)


def _json(text: str | None):
    return None if text is None else json.loads(text)


def _utc(text: str | None) -> datetime | None:
    """SQLAlchemy writes SQLite timestamps as naive UTC text; vopstore hands them out as aware UTC."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
