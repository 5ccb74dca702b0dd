"""Resumable uploads through the registry server: one session per (tenant, digest), filled in chunks.

A big version's upload survives a dropped connection. In the spirit of tus and of OCI chunked
uploads, kept small:

- ``PATCH /v1/tenants/{tenant}/blobs/{digest}/upload`` with ``Upload-Offset: N`` and
  ``Upload-Length: TOTAL`` appends its body at byte N of the session (N = 0 starts one). A wrong N
  gets 409 with the session's offset in ``Upload-Offset``; the bytes of a body cut short stay.
- ``GET`` of the same path answers the session's offset (404 when none is under way).
- The chunk that brings the session to TOTAL bytes completes it: the file is hashed, must be
  ``digest`` and a valid prompt set, and is staged exactly like a whole-body ``PUT .../blobs/{digest}``.

The partial bytes live in ``{upload folder}/{tenant}/{digest}.part``, a folder every worker
shares; the tenant and digest are validated before they name a path, and the tenant is the
caller's own, so no tenant reaches another's session. The part's length is the offset. An
exclusive ``flock`` on the part serialises appends from any worker or client, so two uploads of
one digest take turns and never interleave bytes. A completed session leaves ``{digest}.done``
(its size) for a while, so a client whose last response was lost learns that it is complete.
Sessions untouched for ``upload_ttl_s`` are removed at startup and whenever a session starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterable, AsyncIterator

from sqlalchemy import select

from vopstore.blobs.transfer import BlobFile
from vopstore.core import validate_digest
from vopstore.db.models import Blob, Tenant
from vopstore.errors import (BlobIntegrityError, ConflictError, NotFoundError, QuotaExceededError,
                             StoreUnavailableError, VopstoreError)
from vopstore.refs import validate_name
from vopstore.store.direct import check_quota

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; run the registry server on a POSIX host
    fcntl = None

log = logging.getLogger("vopstore.server")
LOCK_WAIT_S = 30.0  # how long a chunk waits for another upload of its digest to finish appending
DONE_KEEP_S = 600.0  # how long a completed session still answers "complete" (bridges a lost last response)
SESSIONS_PER_TENANT = 16  # open sessions a tenant may hold: bounds the server's disk use per tenant


class OffsetMismatch(ConflictError):
    """The chunk's ``Upload-Offset`` is not where the session stands (``offset``)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class UploadState:
    offset: int
    complete: bool


@dataclass(frozen=True)
class UploadFolder:
    """The sessions of every tenant: ``{root}/{tenant}/{digest}.part`` (and ``.done`` once complete)."""

    root: Path
    ttl_s: float

    def part(self, tenant: str, digest: str) -> Path:
        return self.root / validate_name(tenant, "tenant") / f"{validate_digest(digest)}.part"

    def state(self, tenant: str, digest: str) -> UploadState | None:
        """Where the session stands, or None when there is none (nor a recently completed one)."""
        part = self.part(tenant, digest)
        try:
            return UploadState(part.stat().st_size, False)
        except FileNotFoundError:
            done = _fresh_done(part)
            return UploadState(done, True) if done is not None else None

    def sweep(self) -> int:
        """Remove sessions untouched for ``ttl_s`` (and stale completion marks); return how many went."""
        removed, now = 0, time.time()
        for path in self.root.glob("*/*.part"):
            removed += _remove_if_idle(path, now - self.ttl_s)
        for path in self.root.glob("*/*.done"):
            if _mtime(path) < now - DONE_KEEP_S:
                path.unlink(missing_ok=True)
        return removed


async def append_chunk(folder: UploadFolder, tenant: str, digest: str, offset: int, length: int,
                       body: AsyncIterable[bytes], stage) -> UploadState:
    """Append ``body`` at ``offset`` of the session; complete it (``stage(BlobFile)``) once it holds ``length`` bytes.

    ``stage`` runs in a thread and stores the verified file (the scoped registry's ``upload``).
    Raises OffsetMismatch (409), NotFoundError (no session to continue), QuotaExceededError (413,
    a body past ``length``) or BlobIntegrityError (422: the whole does not hash to ``digest``).
    """
    part = folder.part(tenant, digest)
    if offset > length:
        raise OffsetMismatch(f"Upload-Offset {offset} is past Upload-Length {length}", _size(part))
    async with _session(part, create=offset == 0, folder=folder) as handle:
        if handle is None:  # no session: a finished one answers a retried last chunk; anything else starts over
            done = _fresh_done(part)
            if done is not None and done == offset == length:
                return UploadState(length, True)
            raise NotFoundError(f"no upload of {digest[:12]}... is under way; start again at Upload-Offset 0")
        held = os.fstat(handle.fileno()).st_size
        if held != offset:
            raise OffsetMismatch(f"the upload holds {held} bytes, not {offset}; continue at Upload-Offset {held}", held)
        received = await _append(handle, body, offset, length)
        if received < length:
            return UploadState(received, False)
        await asyncio.to_thread(_complete, part, handle, digest, length, stage)
        return UploadState(length, True)


async def _append(handle, body: AsyncIterable[bytes], offset: int, length: int) -> int:
    """Write the body at the part's end; keep what arrived before a disconnect, refuse bytes past ``length``."""
    from starlette.requests import ClientDisconnect

    done = offset
    handle.seek(offset)
    try:
        async for chunk in body:
            if done + len(chunk) > length:
                handle.truncate(offset)  # the chunk is refused whole: the session stays where it was
                raise QuotaExceededError(f"the chunk runs past Upload-Length {length}; send at most "
                                         f"{length - offset} bytes at Upload-Offset {offset}")
            handle.write(chunk)
            done += len(chunk)
    except ClientDisconnect:
        log.info("upload chunk cut off at byte %d; the session keeps it", done)
    finally:
        handle.flush()
    return done


def _complete(part: Path, handle, digest: str, length: int, stage) -> None:
    """Verify the whole part and stage it; the session ends unless the blob store was unavailable."""
    blob = BlobFile.hash(part)
    try:
        if blob.digest != digest or blob.size != length:
            raise BlobIntegrityError(f"the uploaded bytes hash to {blob.digest[:12]}... ({blob.size} bytes), not "
                                     f"{digest[:12]}...; a chunk was damaged: the upload is discarded, send it again")
        stage(blob)
    except StoreUnavailableError:
        raise  # the part stays: a retried last chunk (empty, at Upload-Offset = Upload-Length) completes it
    except VopstoreError:
        part.unlink(missing_ok=True)
        raise
    done = part.with_suffix(".done")
    done.write_text(str(length))
    part.unlink(missing_ok=True)


@asynccontextmanager
async def _session(part: Path, *, create: bool, folder: UploadFolder) -> AsyncIterator:
    """The part file, open and exclusively locked (None when there is no session and ``create`` is false)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        handle = _open(part, create, folder)
        if handle is None:
            yield None
            return
        try:
            while not _try_lock(handle):
                if time.monotonic() > deadline:
                    raise OffsetMismatch("another upload of this blob is appending; retry in a moment",
                                         _size(part))
                await asyncio.sleep(0.05)
            if _same_file(handle, part):  # the holder before us may have completed (removed) the part
                break
        except BaseException:
            handle.close()
            raise
        handle.close()
    try:
        yield handle
    finally:
        handle.close()  # releases the lock


def _open(part: Path, create: bool, folder: UploadFolder):
    if create and not part.exists():
        part.parent.mkdir(parents=True, exist_ok=True)
        folder.sweep()
        if sum(1 for _ in part.parent.glob("*.part")) >= SESSIONS_PER_TENANT:
            raise QuotaExceededError(f"this tenant has {SESSIONS_PER_TENANT} unfinished uploads; finish them, or "
                                     "wait until they expire")
        part.with_suffix(".done").unlink(missing_ok=True)
    try:
        fd = os.open(part, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        return None
    return os.fdopen(fd, "r+b")


def _try_lock(handle) -> bool:
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _same_file(handle, part: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == part.stat().st_ino
    except FileNotFoundError:
        return False


def _remove_if_idle(part: Path, cutoff: float) -> int:
    """Remove the part if it was last written before ``cutoff`` and no upload holds it."""
    if _mtime(part) >= cutoff:  # the common case, decided without taking a lock an appender may want
        return 0
    try:
        handle = open(part, "r+b")
    except FileNotFoundError:
        return 0
    with handle:  # locked and looked at again: a chunk may have arrived since
        if not _try_lock(handle) or not _same_file(handle, part) or os.fstat(handle.fileno()).st_mtime >= cutoff:
            return 0
        part.unlink(missing_ok=True)
        return 1


def _fresh_done(part: Path) -> int | None:
    """The size a recently completed session of this part reached, or None."""
    done = part.with_suffix(".done")
    try:
        if _mtime(done) < time.time() - DONE_KEEP_S:
            return None
        return int(done.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def check_room(registry, tenant: str, digest: str, size: int) -> None:
    """Refuse (413) a new session whose blob would take the tenant past its quota, before any byte is read.

    The same rule as the staging step applies at completion (under its row lock); this is the early
    answer for a big upload. A blob the tenant already holds costs nothing.
    """
    with registry._session() as session:  # noqa: SLF001 - a read of the scoped store's own rows
        row = session.scalars(select(Tenant).where(Tenant.name == tenant)).first()
        if row is None or row.quota_bytes is None:
            return
        held = session.scalar(select(Blob.id).where(Blob.tenant_id == row.id, Blob.digest == digest))
        if held is None:
            check_quota(session, row, size)
