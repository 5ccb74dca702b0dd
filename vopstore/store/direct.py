"""The direct registry: a SQL database plus a blob backend, for one machine or a trusted cluster.

Write order (OCI's push protocol): a blob row is recorded, the blob is uploaded
create-only, and only then the version row is inserted, in one transaction with
its task and aliases. A crash at any point leaves at most an unreferenced blob,
which :meth:`DirectRegistry.gc` collects; never a visible version without bytes.
"""

from __future__ import annotations

import getpass
import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import delete, exc as sa_exc, func, select, update
from sqlalchemy.orm import sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from vopstore.blobs.base import (blob_intact, blob_key, download_blob, local_blob_path, open_blob_file,
                                 read_verified)
from vopstore.blobs.transfer import BlobFile, Progress
from vopstore.checkpoint import PromptSetMeta, read_checkpoint
from vopstore.core import canonical_json, retry
from vopstore.db.engine import TransientDatabaseError, translate_errors
from vopstore.db.models import Alias, Backbone, Blob, Task, Tenant, Version, utcnow
from vopstore.errors import (BlobIntegrityError, ConfigError, ConflictError, PermissionDeniedError, QuotaExceededError,
                             StoreUnavailableError)
from vopstore.refs import DEFAULT_TENANT, Ref, parse_ref, parse_task, validate_alias, validate_name
from vopstore.store import audit, manifest, sql
from vopstore.store.cache import BlobCache
from vopstore.store.info import TaskInfo, VersionInfo
from vopstore.store.maintenance import MaintenanceMixin
from vopstore.store.payload import Payload, digest_of, intact_at, parse_payload, put_payload, size_of
from vopstore.store.tenants import TenantsMixin

MAX_USER_LENGTH = 128  # Version.created_by
MAX_JSON_DEPTH = 64  # metrics and training configs: deeper is a mistake, and deep enough breaks json/SQL
RETRIES = 20  # concurrent writers to one new task/tenant collide on unique keys; each retry finds the winner's row


class DirectRegistry(MaintenanceMixin, TenantsMixin):
    """A :class:`~vopstore.store.registry.Registry` over an SQLAlchemy engine and a blob backend.

    Args:
        engine: engine of a database at the head schema revision.
        blobs: the blob backend holding this store's blobs.
        url: the store's URL, used in messages.
        tenant: scope every call to this tenant (None: all tenants, refs default to ``local``).
        cache: the local cache that :meth:`fetch` fills (default: ``$VOPSTORE_HOME/cache``).
        actor: who the audit log names for this handle's writes (default: the user name).
    """

    def __init__(self, engine, blobs, *, url: str, tenant: str | None = None, cache: BlobCache | None = None,
                 actor: str | None = None) -> None:
        self._tenant = validate_name(tenant, "tenant") if tenant is not None else None
        self.url, self.engine, self.blobs = url, engine, blobs
        self.cache = cache or BlobCache()
        self.user = current_user()
        self.actor = actor or self.user
        self._reader = sessionmaker(engine, expire_on_commit=False)
        self._writer = sessionmaker(engine.execution_options(immediate=True), expire_on_commit=False)

    def __repr__(self) -> str:
        return f"DirectRegistry({self.url!r}, tenant={self.tenant!r})"

    # The scope is fixed at construction: a scoped handle cannot be widened in place, and its blob
    # backend (whatever is assigned to it) is reached only through the tenant's own keys. This is
    # not a security boundary against code holding the database credentials (see README).

    @property
    def tenant(self) -> str | None:
        """The tenant this handle is scoped to (None: every tenant); read-only."""
        return self._tenant

    @tenant.setter
    def tenant(self, _value) -> None:
        raise AttributeError("a DirectRegistry's tenant is fixed when it is opened; open another handle "
                             "(open_store(url, tenant=...)) for another scope")

    @property
    def default_tenant(self) -> str:
        return self._tenant or DEFAULT_TENANT

    @property
    def blobs(self):
        return self._blobs

    @blobs.setter
    def blobs(self, backend) -> None:
        self._blobs = backend if self._tenant is None else TenantBlobs(backend, self._tenant)

    # -- plumbing ---------------------------------------------------------------------------------

    @contextmanager
    def _session(self, write: bool = False):
        with translate_errors(self.url):
            with (self._writer if write else self._reader)() as session, session.begin():
                yield session

    def _retrying(self, attempt_fn):
        """Run ``attempt_fn`` until it gets past unique-key races with concurrent writers."""
        try:
            return retry(attempt_fn, attempts=RETRIES, when=lambda exc: isinstance(exc, _WRITE_CONFLICTS),
                         wait=lambda attempt: random.uniform(0.005, 0.05) * (attempt + 1))
        except _WRITE_CONFLICTS:
            raise StoreUnavailableError(f"{self.url}: gave up after {RETRIES} write conflicts; retry") from None

    def _scope(self, tenant: str) -> str:
        if self.tenant is not None and tenant != self.tenant:
            raise PermissionDeniedError(
                f"this store is opened as tenant {self.tenant!r}; tenant {tenant!r} is out of its reach")
        return tenant

    def _ref(self, text: str) -> Ref:
        ref = parse_ref(text, self.default_tenant)
        self._scope(ref.tenant)
        return ref

    def _task(self, text: str) -> Ref:
        ref = parse_task(text, self.default_tenant)
        self._scope(ref.tenant)
        return ref

    def _tenant_filter(self):
        return [Tenant.name == self.tenant] if self.tenant is not None else []

    # -- reads ------------------------------------------------------------------------------------

    def resolve(self, ref: str) -> VersionInfo:
        """The version ``[tenant/]task[@vN|@alias]`` names; no selector means the latest.

        Raises:
            InvalidRefError, TaskNotFoundError, VersionNotFoundError, AliasNotFoundError, PermissionDeniedError.
        """
        parsed = self._ref(ref)

        def attempt():  # retried: on PostgreSQL a concurrent rm can delete the row between the two reads
            with translate_errors(self.url), self.engine.connect() as conn:  # Core: the hot path skips the ORM
                info = sql.find_info(conn, parsed)
            if info is not None:
                return info
            with self._session() as session:  # a miss: the precise error (or a row written since)
                return _one(session, sql.version_id(session, parsed, self.url))

        return self._retrying(attempt)

    def list_versions(self, task: str) -> list[VersionInfo]:
        """Every version of ``task``, oldest first."""
        parsed = self._task(task)
        with self._session() as session:
            tid = sql.require_task_id(session, parsed, self.url)
            return sql.load_infos(session, Version.task_id == tid)

    def list_tasks(self) -> list[TaskInfo]:
        """Every task in reach, with its version count, latest number and aliases."""
        with self._session() as session:
            rows = session.execute(
                select(Task.id, Tenant.name, Task.name, func.count(Version.id), func.max(Version.number))
                .join(Tenant, Task.tenant_id == Tenant.id).outerjoin(Version, Version.task_id == Task.id)
                .where(*self._tenant_filter()).group_by(Task.id, Tenant.name, Task.name)
                .order_by(Tenant.name, Task.name)).all()
            aliases: dict[int, dict[str, int]] = {}
            for tid, name, number in session.execute(
                    select(Alias.task_id, Alias.name, Version.number).join(Version, Alias.version_id == Version.id)
                    .where(Alias.task_id.in_([row[0] for row in rows]))):  # only the listed tasks' aliases
                aliases.setdefault(tid, {})[name] = number
        return [TaskInfo(tenant=t, name=n, versions=c, latest=m, aliases=aliases.get(tid, {}))
                for tid, t, n, c, m in rows]

    def read_blob(self, info: VersionInfo) -> bytes:
        """The version's bytes from this store's blob backend, verified against its digest."""
        self._scope(info.tenant)
        return read_verified(self.blobs, info.tenant, info.digest)

    def fetch(self, ref_or_info: str | VersionInfo, *, progress: Progress | None = None) -> Path:
        """A verified copy of the version's file in the local cache (streamed from the blobs on a miss)."""
        info = ref_or_info if isinstance(ref_or_info, VersionInfo) else self.resolve(ref_or_info)
        self._scope(info.tenant)
        # Keyed per tenant: a scoped handle is never served another tenant's copy of the same digest.
        return (self.cache.get(info.digest, info.tenant)
                or (self.cache.get(info.digest) if self._tenant is None else None)  # the digest-only layout
                or download_blob(self.blobs, info.tenant, info.digest, self.cache.path(info.digest, info.tenant),
                                 size=info.size, progress=progress).path)

    @contextmanager
    def open_blob(self, info: VersionInfo, *, progress: Progress | None = None) -> Iterator[BlobFile]:
        """A verified local file of the version for a ``with`` block: a local blob hashed in place, a remote one
        downloaded into the local cache (where an interrupted download resumes)."""
        self._scope(info.tenant)
        if local_blob_path(self.blobs, blob_key(info.tenant, info.digest)) is None:
            yield BlobFile(self.fetch(info, progress=progress), info.digest, info.size)
            return
        with open_blob_file(self.blobs, info.tenant, info.digest, size=info.size) as blob:
            yield blob

    # -- writes -----------------------------------------------------------------------------------

    def add(self, task: str, path: str | os.PathLike, *, metrics: dict | None = None, message: str | None = None,
            training_config: dict | None = None, parent: str | None = None) -> VersionInfo:
        """Validate the checkpoint at ``path`` and register it as the next version of ``task``.

        Adding bytes that are already a version of this task returns that version
        (same content, same identity) instead of numbering a duplicate.
        """
        json_object(metrics, "metrics"), json_object(training_config, "training_config")  # before any file I/O
        self._task(task)
        # Read once: the bytes checked (layout and the method's schema) are the bytes stored.
        data, meta, _ = read_checkpoint(path, contents=True)
        return self._add_checked(task, data, meta, metrics=metrics, message=message, training_config=training_config,
                                 parent=parent)[0]

    def add_bytes(self, task: str, data: Payload, *, metrics: dict | None = None, message: str | None = None,
                  training_config: dict | None = None, parent: str | None = None,
                  created_by: str | None = None) -> tuple[VersionInfo, bool]:
        """:meth:`add` for checkpoint bytes in memory or a verified file (the registry server's); (info, new?)."""
        ref = self._task(task)
        meta, _ = parse_payload(data, f"{ref.task_ref} upload", contents=True)
        return self._add_checked(task, data, meta, metrics=metrics, message=message,
                                 training_config=training_config, parent=parent, created_by=created_by)

    def _add_checked(self, task: str, data: Payload, meta: PromptSetMeta, *, metrics: dict | None = None,
                     message: str | None = None, training_config: dict | None = None, parent: str | None = None,
                     created_by: str | None = None) -> tuple[VersionInfo, bool]:
        ref = self._task(task)
        fields = {"metrics": json_object(metrics, "metrics"), "training_config": json_object(training_config,
                  "training_config"), "message": message, "parent": self._parent(parent),
                  "created_by": _created_by(created_by) or self.user}
        return self._store(ref.tenant, ref.task, meta, data, digest_of(data), fields, number=None)

    def upload(self, data: Payload, tenant: str | None = None) -> str:
        """Validate checkpoint bytes (or a verified file) and stage them as a blob of ``tenant``; return their digest.

        The registry server's first step of an add or push: the version row that
        references the blob comes in a second request (gc's grace protects the blob meanwhile).
        """
        tenant = self._scope(tenant or self.default_tenant)
        parse_payload(data, "upload", contents=True)
        digest = digest_of(data)
        self._retrying(lambda: self._stage_blob(tenant, digest, data))
        return digest

    def import_version(self, info: VersionInfo, data: Payload, aliases: tuple[str, ...] = (), *,
                       check_contents: bool = True, progress: Progress | None = None) -> tuple[VersionInfo, bool]:
        """Store a version copied from another store, keeping its number and metadata.

        Returns (the stored version, whether it was new). The same number with the
        same digest is a no-op; with another digest it is refused. The bytes are checked
        against their method's schema like an add's; ``check_contents=False`` is for a
        rebuild restoring this store's own versions (some may predate that check). ``data`` is
        bytes, or a :class:`~vopstore.blobs.transfer.BlobFile` already verified (its digest is compared, not
        recomputed).
        """
        self._scope(info.tenant)
        if digest_of(data) != info.digest:
            raise BlobIntegrityError(f"{info.ref}: bytes do not match digest {info.digest[:12]}...; the source is corrupt")
        meta, _ = parse_payload(data, info.ref, contents=check_contents)
        fields = {"metrics": info.metrics, "training_config": info.training_config, "message": info.message,
                  "parent": info.parent, "created_by": _created_by(info.created_by), "created_at": info.created_at}
        return self._store(info.tenant, info.task, meta, data, info.digest, fields, number=info.number,
                           aliases=aliases, progress=progress)

    def _store(self, tenant: str, task: str, meta: PromptSetMeta, data: Payload, digest: str, fields: dict, *,
               number: int | None, aliases: tuple[str, ...] = (),
               progress: Progress | None = None) -> tuple[VersionInfo, bool]:
        def attempt():
            self._stage_blob(tenant, digest, data, progress)
            with self._session(write=True) as session:
                return self._insert(session, tenant, task, meta, digest, fields, number, aliases)

        info, created = self._retrying(attempt)
        manifest.record_version(self.blobs, info, created)  # after the commit: the blobs alone can rebuild the db
        manifest.record_aliases(self.blobs, info, aliases, self.actor)
        return info, created

    def _stage_blob(self, tenant: str, digest: str, data: Payload, progress: Progress | None = None) -> None:
        """Record the blob row (its time protects it from gc while in flight), then upload the bytes.

        An existing blob is re-hashed (unless ``data`` was just read from it, verified), so adding or
        pulling the bytes again repairs a corrupt copy.
        """
        with self._session(write=True) as session:
            tenant_row = sql.get_or_create(session, Tenant, name=tenant)
            blob = session.scalars(select(Blob).where(Blob.tenant_id == tenant_row.id, Blob.digest == digest)).first()
            if blob is None:
                if tenant_row.quota_bytes is not None:  # concurrent uploads of one tenant sum one at a time
                    session.execute(select(Tenant.id).where(Tenant.id == tenant_row.id).with_for_update())
                check_quota(session, tenant_row, size_of(data))
                blob = sql.get_or_create(session, Blob, {"size": size_of(data)}, tenant_id=tenant_row.id,
                                         digest=digest)
            blob.created_at = utcnow()
        key = blob_key(tenant, digest)
        if put_payload(self.blobs, key, data, progress) or intact_at(data, self.blobs):
            return
        if not blob_intact(self.blobs, tenant, digest):
            self.blobs.delete(key)  # a damaged or vanished copy: replace it with the verified bytes in hand
            put_payload(self.blobs, key, data, progress)

    def _insert(self, session, tenant, task, meta, digest, fields, number, aliases) -> tuple[VersionInfo, bool]:
        action = "add" if number is None else "import"  # import: copied in from another store (push or pull)
        tenant_row = sql.get_or_create(session, Tenant, name=tenant)
        task_row = sql.get_or_create(session, Task, {"last_number": 0}, tenant_id=tenant_row.id, name=task)
        # Row lock on the task (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers).
        session.execute(select(Task.id).where(Task.id == task_row.id).with_for_update())
        blob = session.scalars(select(Blob).where(Blob.tenant_id == tenant_row.id, Blob.digest == digest)).first()
        if blob is None:  # a concurrent gc collected it between staging and now: stage again
            raise _BlobRowGone()
        existing = self._existing(session, task_row.id, blob.id, number, f"{tenant}/{task}", digest)
        if existing is not None:
            self._set_aliases(session, task_row, existing, aliases)
            return _one(session, existing), False
        if number is None:
            session.execute(update(Task).where(Task.id == task_row.id).values(last_number=Task.last_number + 1))
            number = session.scalar(select(Task.last_number).where(Task.id == task_row.id))
        else:
            session.execute(update(Task).where(Task.id == task_row.id, Task.last_number < number)
                            .values(last_number=number))
        backbone = sql.get_or_create(session, Backbone, name=meta.backbone_name, fingerprint=meta.backbone_fingerprint)
        version = Version(task_id=task_row.id, number=number, blob_id=blob.id, backbone_id=backbone.id,
                          method=meta.method, method_config=meta.config, dtype=meta.dtype, params=meta.params,
                          **{k: v for k, v in fields.items() if v is not None})
        session.add(version)
        session.flush()
        audit.record(session, tenant_row.id, action, self.actor,
                     task=task, new={"version": number, "digest": digest})
        self._set_aliases(session, task_row, version.id, aliases)
        return _one(session, version.id), True

    @staticmethod
    def _existing(session, task_id, blob_id, number, task_ref, digest) -> int | None:
        """The id of a version that makes this write a no-op; ConflictError if the number is taken."""
        if number is None:
            return session.scalar(select(Version.id).where(Version.task_id == task_id, Version.blob_id == blob_id)
                                  .order_by(Version.number).limit(1))
        row = session.execute(select(Version.id, Blob.digest).join(Blob, Version.blob_id == Blob.id)
                              .where(Version.task_id == task_id, Version.number == number)).first()
        if row is None:
            return None
        if row.digest != digest:
            raise ConflictError(
                f"{task_ref}@v{number} already exists with digest {row.digest[:12]}..., not {digest[:12]}...; "
                "the two stores diverged: remove one of them or copy under another task name")
        return row.id

    def _set_aliases(self, session, task_row: Task, version_id: int, aliases,
                     expected_digest: str | None = None) -> None:
        """Point each alias at ``version_id``, recording every actual move in the audit log.

        With ``expected_digest`` each move is a compare-and-swap against the row read here.
        """
        for name in aliases:
            # FOR UPDATE: a concurrent move waits here and then reads this one's result, so the
            # audit log's old -> new chain is exactly the order in which the moves happened. The
            # compare-and-swap checks this same locked row: a check in an earlier statement would
            # let a move committed in between be overwritten (READ COMMITTED sees it only now).
            row = session.scalars(select(Alias).where(Alias.task_id == task_row.id, Alias.name == name)
                                  .with_for_update()).first()
            old = None if row is None else row.version_id
            if expected_digest is not None:
                self._compare_alias(session, old, expected_digest, f"{task_row.name}@{name}")
            if row is None:
                session.add(Alias(task_id=task_row.id, name=name, version_id=version_id))
            elif row.version_id != version_id:
                row.version_id, row.updated_at = version_id, utcnow()
            if old != version_id:
                audit.record(session, task_row.tenant_id, "tag", self.actor, task=task_row.name,
                             old=_alias_value(session, name, old), new=_alias_value(session, name, version_id))
        session.flush()

    def _parent(self, parent: str | None) -> str | None:
        """A parent ref, pinned to its version number when this store knows it."""
        if parent is None:
            return None
        ref = parse_ref(parent, self.default_tenant)
        try:
            return self.resolve(str(ref)).ref
        except LookupError:
            return str(ref)

    def tag(self, ref: str, alias: str, *, expected_digest: str | None = None) -> VersionInfo:
        """Point ``alias`` of the ref's task at the version ``ref`` names (creating or moving it).

        With ``expected_digest`` the move is a compare-and-swap: it happens only if the
        alias still points at that digest (ConflictError otherwise), so two promoters
        racing on one alias cannot silently overwrite each other; ``""`` expects that
        the alias does not exist yet.
        """
        parsed, alias = self._ref(ref), validate_alias(alias)

        def attempt():  # retried: a concurrent first tag of this alias, or an rm of the version, may win
            with self._session(write=True) as session:
                vid = sql.version_id(session, parsed, self.url)
                tid = sql.require_task_id(session, parsed, self.url)
                self._set_aliases(session, session.get(Task, tid), vid, (alias,), expected_digest)
                return _one(session, vid)

        info = self._retrying(attempt)
        manifest.record_alias(self.blobs, info.tenant, info.task, alias, info, self.actor)
        return info

    @staticmethod
    def _compare_alias(session, version_id: int | None, expected: str, alias_ref: str) -> None:
        current = None if version_id is None else session.scalar(
            select(Blob.digest).join(Version, Version.blob_id == Blob.id).where(Version.id == version_id))
        if current != (expected or None):  # "" expects no alias at all
            now = f"{current[:12]}..." if current else "nothing"
            was = f"{expected[:12]}..." if expected else "nothing"
            raise ConflictError(f"{alias_ref} points at {now}, not the expected {was}; "
                                "someone moved it: resolve it again and retry")

    def untag(self, task: str, alias: str) -> None:
        """Remove ``alias`` from ``task``; AliasNotFoundError if it has none of that name."""
        parsed = self._task(task)

        def attempt():
            with self._session(write=True) as session:
                tid = sql.require_task_id(session, parsed, self.url)
                vid = sql.version_id(session, Ref(parsed.tenant, parsed.task, alias=validate_alias(alias)), self.url)
                task_row = session.get(Task, tid)
                audit.record(session, task_row.tenant_id, "untag", self.actor, task=task_row.name,
                             old=_alias_value(session, alias, vid))
                session.execute(delete(Alias).where(Alias.task_id == tid, Alias.name == alias))

        self._retrying(attempt)
        manifest.record_alias(self.blobs, parsed.tenant, parsed.task, alias, None, self.actor)

    def remove(self, ref: str, force: bool = False) -> VersionInfo:
        """Delete the version ``ref`` names; refused while an alias points to it unless ``force``.

        Its number is never given out again; its blob stays until :meth:`gc`.
        """
        parsed = self._ref(ref)

        def attempt():  # retried: a tag committed meanwhile makes the DELETE fail on its foreign key
            with self._session(write=True) as session:
                vid = sql.version_id(session, parsed, self.url)
                # Lock the row (PostgreSQL): a concurrent tag's alias insert waits for this rm, then fails its
                # foreign key and retries; a concurrent rm that won already leaves nothing to lock.
                if session.scalar(select(Version.id).where(Version.id == vid).with_for_update()) is None:
                    raise _VersionGone()
                info = _one(session, vid)
                if info.aliases and not force:
                    raise ConflictError(f"{info.ref} is aliased as {', '.join(info.aliases)}; "
                                        "move or untag the aliases first, or pass --force to drop them too")
                task_row = session.get(Task, sql.require_task_id(session, parsed, self.url))
                audit.record(session, task_row.tenant_id, "rm", self.actor, task=task_row.name,
                             old={"version": info.number, "digest": info.digest, "aliases": list(info.aliases)})
                session.execute(delete(Alias).where(Alias.version_id == vid))
                session.execute(delete(Version).where(Version.id == vid))
            return info

        info = self._retrying(attempt)
        manifest.record_removal(self.blobs, info, self.actor)  # a tombstone: a rebuild must not resurrect it
        return info

    def log(self, task: str | None = None, limit: int | None = None) -> list[dict]:
        """The audit log of ``task`` (or of the whole tenant), oldest first: who changed what, when, old and new."""
        if task is None:
            tenant = self._scope(self.default_tenant)
            name = None
        else:
            parsed = self._task(task)
            tenant, name = parsed.tenant, parsed.task
        with self._session() as session:
            return audit.entries(session, tenant, name, limit)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


class _BlobRowGone(Exception):
    """Internal: the staged blob row vanished before its version was written; the write is retried."""


class _VersionGone(Exception):
    """Internal: a concurrent rm deleted the version between two statements; the call is retried."""


# What a write retries: SQLAlchemy's IntegrityError (a unique-key race), stale (gc deleted a row we
# refresh), gone (an rm won), transient (a deadlock or serialization failure).
_WRITE_CONFLICTS = (sa_exc.IntegrityError, StaleDataError, _BlobRowGone, _VersionGone, TransientDatabaseError)


def _one(session, version_id: int) -> VersionInfo:
    infos = sql.load_infos(session, Version.id == version_id)
    if not infos:
        raise _VersionGone()
    return infos[0]


class TenantBlobs:
    """A blob backend seen through one tenant: keys outside ``{tenant}/`` are refused, listings stay inside it.

    Other attributes (``url``, ``root``, ...) pass through to the backend.
    """

    def __init__(self, backend, tenant: str) -> None:
        if isinstance(backend, TenantBlobs):
            backend = backend.backend
        self.backend, self.tenant, self._prefix = backend, tenant, f"{tenant}/"

    def __repr__(self) -> str:
        return f"TenantBlobs({self.backend!r}, tenant={self.tenant!r})"

    def __getattr__(self, name: str):
        if name in ("backend", "tenant", "_prefix"):  # not set yet (copy, pickle): never recurse
            raise AttributeError(name)
        return getattr(self.backend, name)

    def _key(self, key: str) -> str:
        if not isinstance(key, str) or not key.startswith(self._prefix):
            raise PermissionDeniedError(f"blob key {key!r} is outside tenant {self.tenant!r}; this store handle "
                                        "reaches only its own tenant's blobs")
        return key

    def put(self, key: str, data: bytes) -> bool:
        return self.backend.put(self._key(key), data)

    def put_file(self, key: str, path, *, progress=None) -> bool:
        return self.backend.put_file(self._key(key), path, progress=progress)

    def get(self, key: str) -> bytes:
        return self.backend.get(self._key(key))

    def read_range(self, key: str, start: int = 0):
        return self.backend.read_range(self._key(key), start)

    def exists(self, key: str) -> bool:
        return self.backend.exists(self._key(key))

    def modified(self, key: str):
        return self.backend.modified(self._key(key))

    def delete(self, key: str) -> None:
        self.backend.delete(self._key(key))

    def path(self, key: str):
        return self.backend.path(self._key(key))

    def presigned_get(self, key: str, *args, **kwargs) -> str:
        return self.backend.presigned_get(self._key(key), *args, **kwargs)

    def list(self, prefix: str = ""):
        return self.backend.list(self._key(prefix or self._prefix))


def json_object(value: dict | None, what: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(value).__name__}")
    if _depth(value) > MAX_JSON_DEPTH:
        raise ConfigError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels; keep it to a few levels")
    try:
        canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not JSON-serialisable ({exc}); use numbers, strings, lists and objects") from None
    return value


def _depth(value) -> int:
    """How deeply ``value`` nests dicts and lists (iterative: no RecursionError on a hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if level > MAX_JSON_DEPTH:
                return level
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _alias_value(session, alias: str, version_id: int | None) -> dict | None:
    """What an alias points at, as the audit log records it."""
    if version_id is None:
        return None
    row = session.execute(select(Version.number, Blob.digest).join(Blob, Version.blob_id == Blob.id)
                          .where(Version.id == version_id)).first()
    if row is None:  # removed by a concurrent rm since this transaction found it
        raise _VersionGone()
    return {"alias": alias, "version": row.number, "digest": row.digest}


def check_quota(session, tenant_row: Tenant, size: int) -> None:
    """Refuse a new blob that would take the tenant past its quota."""
    if tenant_row.quota_bytes is None:
        return
    used = session.scalar(select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.tenant_id == tenant_row.id))
    if used + size > tenant_row.quota_bytes:
        raise QuotaExceededError(f"tenant {tenant_row.name!r} would hold {used + size} bytes, over its quota of "
                                 f"{tenant_row.quota_bytes}; remove versions and run gc, or ask for a larger quota")


def current_user() -> str | None:
    """Who ``created_by`` names for this process: ``$VOPSTORE_USER``, else the login name (capped)."""
    return _created_by(os.environ.get("VOPSTORE_USER") or _login())


def _created_by(user: str | None) -> str | None:
    """The user name as stored: at most 128 characters (the column's width)."""
    return user[:MAX_USER_LENGTH] if user else None


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return None
