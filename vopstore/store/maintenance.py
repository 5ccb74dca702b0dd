"""verify and gc for the direct registry: re-hash what is stored, collect what nothing references."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, exists, select, text

from vopstore.blobs.base import blob_key, open_blob_file
from vopstore.db.models import Blob, Task, Tenant, Version, utcnow
from vopstore.errors import BlobIntegrityError, BlobNotFoundError, ConfigError, ConflictError, InvalidCheckpointError
from vopstore.store import manifest, sql
from vopstore.store.info import VersionInfo
from vopstore.store.payload import parse_payload

# gc without --force deletes at most half of the blobs in reach once it would delete this many: a sweep
# that large usually means the database is not the blob store's (lost, replaced or an old backup).
SWEEP_GUARD_MIN = 3


class MaintenanceMixin:
    """Mixed into DirectRegistry; uses its ``_session``, ``_tenant_filter``, ``resolve``, ``read_blob``, ``blobs``."""

    def verify(self, ref: str | None = None) -> list[str]:
        """Re-hash the blobs of ``ref`` (or of every version in reach); return one line per problem."""
        if ref is not None:
            infos = [self.resolve(ref)]
        else:
            with self._session() as session:
                infos = sql.load_infos(session, *[Version.task_id.in_(
                    select(Task.id).join(Tenant, Task.tenant_id == Tenant.id).where(*self._tenant_filter()))])
        return [problem for info in infos if (problem := self._check(info))]

    def _check(self, info: VersionInfo) -> str | None:
        try:  # streamed: a big blob is hashed in place (local) or through a temporary file (S3), never held whole
            with open_blob_file(self.blobs, info.tenant, info.digest) as blob:
                parse_payload(blob, info.ref, contents=False)
        except BlobNotFoundError:
            return f"{info.ref}: blob {info.digest[:12]}... is missing from {self.blobs.url}"
        except (BlobIntegrityError, InvalidCheckpointError) as exc:
            return f"{info.ref}: {exc}"
        if blob.size != info.size:
            return f"{info.ref}: blob has {blob.size} bytes, the database says {info.size}"
        return None

    def gc(self, grace_s: float = 3600.0, dry_run: bool = False, force: bool = False) -> int:
        """Delete blobs no version references; return how many were (or, dry run, would be) removed.

        Blobs younger than ``grace_s`` seconds are kept: an add may be between its
        upload and its version row. A blob's age is its row's time, or for a blob
        this database has no row for, the object's own modification time. Files are
        deleted inside the transaction that deletes their rows, so an add of the same
        bytes meanwhile waits for gc and then uploads them afresh, never trusting a
        file that is about to go.

        One blob folder or bucket prefix belongs to one database: gc also deletes
        every blob-shaped key (``{tenant}/sha256/{aa}/{digest}``) there that this
        database has no row for, so never share a blob prefix between databases.
        Keys of any other shape are left alone.

        Refused (ConflictError), because the database looks lost or rolled back: when
        the blob store holds manifests of versions this database does not have. Also
        refused without ``force``: a sweep that would delete more than half of the
        blobs in reach (and at least ``SWEEP_GUARD_MIN``).
        """
        cutoff = _cutoff(grace_s)
        # Retried: on PostgreSQL an add committing a version between this sweep's reads and its DELETE makes
        # the DELETE fail its foreign key (or a deadlock); the sweep then starts again from a fresh listing.
        return self._retrying(lambda: self._sweep(cutoff, dry_run, force))

    def _sweep(self, cutoff: datetime, dry_run: bool, force: bool) -> int:
        prefix = f"{self.tenant}/" if self.tenant else ""
        # List before reading rows: a newer upload has its row already. Only vopstore's keys are candidates.
        records = manifest.scan(self.blobs.list(prefix))
        listed = records.blobs
        with self._session(write=True) as session:
            if session.get_bind().dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE already holds writers off
                session.execute(text("LOCK TABLE blob IN SHARE ROW EXCLUSIVE MODE"))
            self._refuse_if_behind(session, records)
            rows = session.execute(select(Blob.id, Tenant.name, Blob.digest, Blob.created_at)
                                   .join(Tenant, Blob.tenant_id == Tenant.id).where(*self._tenant_filter())).all()
            used = set(session.scalars(select(Version.blob_id).distinct()))
            dead = {r.id for r in rows if r.id not in used and sql.as_utc(r.created_at) < cutoff}
            known = {blob_key(r.name, r.digest) for r in rows}
            rowless = {k for k in listed - known if self._older_than(k, cutoff)}
            doomed = {blob_key(r.name, r.digest) for r in rows if r.id in dead} | rowless
            if not dry_run and not force:
                _guard_sweep(len(doomed), len(listed | known), self.blobs.url)
            if not dry_run and dead:
                # Lock the candidates first: an add whose version row references one of them waits (its foreign
                # key check) until this sweep commits, then retries; the DELETE then re-checks with a fresh view.
                session.execute(select(Blob.id).where(Blob.id.in_(dead)).with_for_update())
                # Re-check in the DELETE itself: a concurrent add may have reused or refreshed a row since.
                dead = set(session.scalars(delete(Blob).where(
                    Blob.id.in_(dead), Blob.created_at < cutoff,
                    ~exists().where(Version.blob_id == Blob.id)).returning(Blob.id)))
                doomed = {blob_key(r.name, r.digest) for r in rows if r.id in dead} | rowless
            if not dry_run:
                for key in sorted(doomed):  # before commit: the deleted rows stay locked until the files are gone
                    self.blobs.delete(key)
        return len(doomed)

    def _older_than(self, key: str, cutoff: datetime) -> bool:
        try:
            return self.blobs.modified(key) <= cutoff
        except BlobNotFoundError:  # gone meanwhile: nothing to delete
            return False

    def _refuse_if_behind(self, session, records: manifest.Records) -> None:
        """Refuse gc when the blob store records versions the database lacks: it may be lost or an old backup."""
        have = {tuple(row) for row in session.execute(
            select(Tenant.name, Task.name, Version.number).join(Task, Version.task_id == Task.id)
            .join(Tenant, Task.tenant_id == Tenant.id).where(*self._tenant_filter()))}
        missing = sorted(set(records.live) - have)
        if missing:
            tenant, task, number = missing[0]
            raise ConflictError(
                f"refusing gc: the blob store {self.blobs.url} records {len(missing)} version(s) this database "
                f"lacks (e.g. {tenant}/{task}@v{number}), so the database may be lost or an older backup; "
                "run 'vopstore fsck' to compare and 'vopstore fsck --rebuild' to restore them")


def _cutoff(grace_s: float) -> datetime:
    """The moment before which unreferenced blobs may go; ConfigError for a grace that is not a finite s >= 0."""
    try:
        grace = float(grace_s)
    except (TypeError, ValueError):
        grace = math.nan
    if not math.isfinite(grace) or grace < 0:
        raise ConfigError(f"gc grace must be a finite number of seconds >= 0, got {grace_s!r}; e.g. --grace 3600")
    try:
        return utcnow() - timedelta(seconds=grace)
    except OverflowError:  # a grace longer than the calendar: nothing is old enough
        return datetime(1970, 1, 1, tzinfo=timezone.utc)


def _guard_sweep(doomed: int, total: int, where: str) -> None:
    if doomed >= SWEEP_GUARD_MIN and doomed * 2 > total:
        raise ConflictError(
            f"refusing gc: it would delete {doomed} of the {total} blobs in {where}, more than half; if the "
            "database is right (see 'vopstore ls', 'vopstore fsck'), run 'vopstore gc --force'")
