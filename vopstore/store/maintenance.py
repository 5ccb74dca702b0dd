"""verify and gc for the direct registry: re-hash what is stored, collect what nothing references."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, exists, select, text

from vopstore.blobs.base import blob_key, is_blob_key
from vopstore.checkpoint import parse_checkpoint_bytes
from vopstore.db.models import Blob, Task, Tenant, Version, utcnow
from vopstore.errors import BlobNotFoundError, IntegrityError, InvalidCheckpointError
from vopstore.store import sql
from vopstore.store.info import VersionInfo


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
        try:
            data = self.read_blob(info)
            parse_checkpoint_bytes(data, info.ref)
        except BlobNotFoundError:
            return f"{info.ref}: blob {info.digest[:12]}... is missing from {self.blobs.url}"
        except (IntegrityError, InvalidCheckpointError) as exc:
            return f"{info.ref}: {exc}"
        if len(data) != info.size:
            return f"{info.ref}: blob has {len(data)} bytes, the database says {info.size}"
        return None

    def gc(self, grace_s: float = 3600.0, dry_run: bool = False) -> int:
        """Delete blobs no version references; return how many were (or, dry run, would be) removed.

        Blobs touched within ``grace_s`` seconds are kept: an add may be between
        its upload and its version row. Files are deleted inside the transaction that
        deletes their rows, so an add of the same bytes meanwhile waits for gc and
        then uploads them afresh, never trusting a file that is about to go.

        One blob folder or bucket prefix belongs to one database: gc also deletes
        every blob-shaped key (``{tenant}/sha256/{aa}/{digest}``) there that this
        database has no row for, so never share a blob prefix between databases.
        Keys of any other shape are left alone.
        """
        prefix = f"{self.tenant}/" if self.tenant else ""
        # List before reading rows: a newer upload has its row already. Only vopstore's keys are candidates.
        listed = {key for key in self.blobs.list(prefix) if is_blob_key(key)}
        cutoff = utcnow() - timedelta(seconds=grace_s)
        with self._session(write=True) as session:
            if session.get_bind().dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE already holds writers off
                session.execute(text("LOCK TABLE blob IN SHARE ROW EXCLUSIVE MODE"))
            rows = session.execute(select(Blob.id, Tenant.name, Blob.digest, Blob.created_at)
                                   .join(Tenant, Blob.tenant_id == Tenant.id).where(*self._tenant_filter())).all()
            used = set(session.scalars(select(Version.blob_id).distinct()))
            dead = {r.id for r in rows if r.id not in used and sql.as_utc(r.created_at) < cutoff}
            if not dry_run and dead:
                # Re-check in the DELETE itself: a concurrent add may have reused or refreshed a row since.
                dead = set(session.scalars(delete(Blob).where(
                    Blob.id.in_(dead), Blob.created_at < cutoff,
                    ~exists().where(Version.blob_id == Blob.id)).returning(Blob.id)))
            known = {blob_key(r.name, r.digest) for r in rows}
            doomed = {blob_key(r.name, r.digest) for r in rows if r.id in dead} | {k for k in listed if k not in known}
            if not dry_run:
                for key in sorted(doomed):  # before commit: the deleted rows stay locked until the files are gone
                    self.blobs.delete(key)
        return len(doomed)
