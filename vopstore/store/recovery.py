"""fsck and rebuild: compare a database with its blob store's records, rebuild a lost database from them.

The blob store holds a manifest per version, an append-only record per alias move
and a tombstone per removal (see :mod:`vopstore.store.manifest`), so it alone can
restore every version (number, digest, metadata), its aliases at their latest record,
and keep removed versions removed. A rebuild merges: into an empty database (lost or
zeroed) it restores everything; into an older backup of the same store it adds what
came later, removes what was removed since and moves aliases to their latest record.

An unreadable (corrupt) or foreign SQLite file is never deleted: it is moved aside as
``store.db.corrupt-{time}`` / ``store.db.foreign-{time}`` and a new one is built.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError

from vopstore.blobs import open_blobs
from vopstore.blobs.base import read_verified
from vopstore.db import ensure_head, make_engine, redact, require_head, translate_errors
from vopstore.db.models import Alias, Task, Tenant, Version
from vopstore.errors import ConfigError, ConflictError, VopstoreError
from vopstore.home import local_store_dir
from vopstore.store import manifest, sql
from vopstore.store.direct import DirectRegistry
from vopstore.store.identity import RECOVER, blob_store_id, database_id, holds_data, write_identity
from vopstore.store.info import VersionInfo
from vopstore.store.open import _dir_path


@dataclass
class RebuildReport:
    """What a rebuild did; ``problems`` lists what it could not restore."""

    store: str
    store_id: str = ""
    moved_aside: str | None = None
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)  # manifests / alias records written for older versions
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def check_store(url: str | None = None, *, blobs: str | None = None) -> list[str]:
    """Compare a store's database with its blob store's records; one line per disagreement (empty: consistent)."""
    target = _locate(url, blobs)
    if target.sqlite_file is not None and not _sqlite_readable(target.db_url):
        return [f"{target.name}: the database {target.sqlite_file} is unreadable (corrupt); {RECOVER}"]
    registry = target.open()
    try:
        return _identity_problems(registry) + _record_problems(registry)
    finally:
        registry.close()


def rebuild_store(url: str | None = None, *, blobs: str | None = None) -> RebuildReport:
    """Rebuild (merge into) a store's database from its blob store, then write the store identity to both."""
    target = _locate(url, blobs)
    report = RebuildReport(store=target.name)
    if target.sqlite_file is not None and not _sqlite_readable(target.db_url):
        report.moved_aside = _move_aside(target.sqlite_file, "corrupt")
    registry = target.open()
    try:
        db_id, blob_id = database_id(registry), blob_store_id(registry.blobs)
        if db_id is not None and blob_id is not None and db_id != blob_id:
            if target.sqlite_file is None:
                raise ConflictError(
                    f"{target.name} belongs to store {db_id}, not to the blob store's {blob_id}; rebuild into an "
                    "empty database (create it, 'vopstore db upgrade --url URL', then fsck --rebuild --url URL)")
            registry.close()
            report.moved_aside = _move_aside(target.sqlite_file, "foreign")
            registry = target.open()
        _merge(registry, report)
        report.store_id = write_identity(registry)
    finally:
        registry.close()
    return report


# -- where the store is -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    db_url: str
    blobs_url: str
    name: str
    sqlite_file: Path | None
    auto_upgrade: bool

    def open(self):
        """The registry, without the identity check (fsck and rebuild are how a refused store is repaired)."""
        engine = make_engine(self.db_url)
        with translate_errors(self.name):
            ensure_head(engine) if self.auto_upgrade else require_head(engine, redact(self.db_url))
        return DirectRegistry(engine, open_blobs(self.blobs_url), url=self.name)


def _locate(url: str | None, blobs: str | None) -> _Target:
    """Mirror open_store's URL forms: None (the local store), a folder or file:// URL, or a database URL + blobs."""
    if url is not None and url.startswith(("sqlite", "postgresql")):
        if not blobs:
            raise ConfigError("a database URL needs its blob store too: --blobs file:///dir or s3://bucket/prefix")
        database = make_url(url).database if url.startswith("sqlite") else None
        return _Target(url, blobs, redact(url), Path(database) if database else None, url.startswith("sqlite"))
    if url is None:
        path = local_store_dir()
    elif "://" in url and not url.startswith("file://"):
        raise ConfigError(f"unsupported store URL {url!r}: use file:///dir, sqlite:///file or postgresql+psycopg://...")
    else:
        path = _dir_path(url)
    path = path.resolve()
    (path / "blobs").mkdir(parents=True, exist_ok=True)
    return _Target(f"sqlite:///{path / 'store.db'}", (path / "blobs").as_uri(), str(path), path / "store.db", True)


def _sqlite_readable(db_url: str) -> bool:
    """Whether SQLite can read the file as a database (a missing or zero-length file reads as an empty one)."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("PRAGMA quick_check")).scalar() == "ok"
    except DatabaseError:
        return False
    finally:
        engine.dispose()


def _move_aside(db_file: Path, why: str) -> str:
    """Rename the database (and its WAL files, which belong to it) out of the way; return the new name."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    aside = db_file.with_name(f"{db_file.name}.{why}-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{db_file}{suffix}")
        if source.exists():
            source.rename(f"{aside}{suffix}")
    return str(aside)


# -- comparing and merging ----------------------------------------------------------------------------


def _db_state(registry) -> tuple[dict[manifest.VersionKey, VersionInfo], dict[manifest.AliasKey, int]]:
    with registry._session() as session:
        versions = {(i.tenant, i.task, i.number): i for i in sql.load_infos(session)}
        aliases = {(tenant, task, alias): number for tenant, task, alias, number in session.execute(
            select(Tenant.name, Task.name, Alias.name, Version.number).join(Task, Alias.task_id == Task.id)
            .join(Tenant, Task.tenant_id == Tenant.id).join(Version, Alias.version_id == Version.id))}
    return versions, aliases


def _identity_problems(registry) -> list[str]:
    db_id, blob_id = database_id(registry), blob_store_id(registry.blobs)
    if db_id is not None and blob_id is not None and db_id != blob_id:
        return [f"{registry.url}: the database belongs to store {db_id}, the blob store to {blob_id}; {RECOVER}"]
    if db_id is None and blob_id is not None:
        return [f"{registry.url}: the database has no store id, the blob store belongs to {blob_id}; {RECOVER}"]
    if db_id is None and not _db_state(registry)[0] and holds_data(registry.blobs):
        return [f"{registry.url}: the database is empty but the blob store holds data; {RECOVER}"]
    return []


def _record_problems(registry) -> list[str]:
    blobs, records = registry.blobs, manifest.scan(registry.blobs.list(""))
    versions, aliases = _db_state(registry)
    problems = []
    for key in sorted(versions.keys() | records.manifests.keys()):
        ref = "{}/{}@v{}".format(*key)
        if key not in versions:
            if key not in records.removed:
                problems.append(f"{ref}: recorded in the blob store but missing from the database; "
                                "'vopstore fsck --rebuild' restores it")
        elif key in records.removed:
            problems.append(f"{ref}: removed (tombstone in the blob store) but still in the database")
        elif key not in records.manifests:
            problems.append(f"{ref}: no manifest in the blob store; 'vopstore fsck --rebuild' writes it")
        elif (recorded := manifest.read_manifest(blobs, records.manifests[key]).digest) != versions[key].digest:
            problems.append(f"{ref}: the database says digest {versions[key].digest[:12]}..., "
                            f"its manifest {recorded[:12]}...")
    for key, record in sorted(records.alias_heads.items()):
        target = manifest.read_alias(blobs, record)
        recorded = target[0] if target else None
        if recorded != aliases.get(key):
            problems.append(f"{key[0]}/{key[1]}@{key[2]}: the database points at {_shown(aliases.get(key))}, "
                            f"its latest record at {_shown(recorded)}")
    return problems


def _shown(number: int | None) -> str:
    return f"v{number}" if number else "nothing"


def _merge(registry, report: RebuildReport) -> None:
    blobs, records = registry.blobs, manifest.scan(registry.blobs.list(""))
    versions, aliases = _db_state(registry)
    for key, record in sorted(records.live.items()):  # oldest first, per task
        if key not in versions:
            _restore(registry, record, report)
    for key in sorted(records.removed & versions.keys()):  # removed after the backup was taken
        registry.remove("{}/{}@v{}".format(*key), force=True)
        report.removed.append("{}/{}@v{}".format(*key))
    _keep_numbers_unique(registry, records)
    versions, aliases = _db_state(registry)  # as restored and removed above
    for key, record in sorted(records.alias_heads.items()):
        _restore_alias(registry, key, manifest.read_alias(blobs, record), versions, aliases, report)
    _record_older(registry, records, versions, aliases, report)


def _restore(registry, record: str, report: RebuildReport) -> None:
    try:
        info = manifest.read_manifest(registry.blobs, record)
        registry.import_version(info, read_verified(registry.blobs, info.tenant, info.digest), check_contents=False)
    except VopstoreError as exc:
        report.problems.append(f"{record}: cannot restore ({exc})")
        return
    report.restored.append(info.ref)


def _restore_alias(registry, key, target, versions, aliases, report: RebuildReport) -> None:
    tenant, task, alias = key
    if target is None:
        if key in aliases:
            registry.untag(f"{tenant}/{task}", alias)
            report.aliases.append(f"{tenant}/{task}@{alias} removed")
        return
    number, digest = target
    info = versions.get((tenant, task, number))
    if info is None or info.digest != digest:
        report.problems.append(f"{tenant}/{task}@{alias}: its latest record names v{number} ({digest[:12]}...), "
                               "which is not in the store; left as it was")
    elif aliases.get(key) != number:
        registry.tag(info.ref, alias)
        report.aliases.append(f"{tenant}/{task}@{alias} -> v{number}")


def _keep_numbers_unique(registry, records: manifest.Records) -> None:
    """Numbers are never given out twice: each task's counter covers every recorded number, removed ones too."""
    highest: dict[tuple[str, str], int] = {}
    for tenant, task, number in [*records.manifests, *records.removed]:
        highest[(tenant, task)] = max(number, highest.get((tenant, task), 0))
    with registry._session(write=True) as session:
        for (tenant, task), number in sorted(highest.items()):
            tenant_row = sql.get_or_create(session, Tenant, name=tenant)
            task_row = sql.get_or_create(session, Task, {"last_number": number}, tenant_id=tenant_row.id, name=task)
            session.execute(update(Task).where(Task.id == task_row.id, Task.last_number < number)
                            .values(last_number=number))


def _record_older(registry, records, versions, aliases, report: RebuildReport) -> None:
    """Write the records that versions and aliases from before manifests existed lack, so a later rebuild has them."""
    for key, info in sorted(versions.items()):
        if key not in records.manifests:
            manifest.record_version(registry.blobs, info, created=False)
            report.recorded.append(f"manifest of {info.ref}")
    for (tenant, task, alias), number in sorted(aliases.items()):
        if (tenant, task, alias) not in records.alias_heads and (info := versions.get((tenant, task, number))):
            manifest.record_alias(registry.blobs, tenant, task, alias, info, registry.actor)
            report.recorded.append(f"alias {tenant}/{task}@{alias}")
