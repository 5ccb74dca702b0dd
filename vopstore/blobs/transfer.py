"""Moving big blobs: verified local files, streamed downloads that resume, and progress callbacks.

A :class:`BlobFile` is a local file whose sha256 was computed from its bytes by whoever built it,
so what comes next (a store's import, the cache, an upload) compares digests instead of hashing the
bytes again: one pass per transfer.

:func:`download_verified` streams a blob into ``{dest}.part`` while hashing it and renames the part
into place only when the whole digest matches, so no reader ever sees unverified bytes. An
interrupted download leaves its part behind; the next download of the same digest hashes what the
part holds and asks the source for the remaining bytes only.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from vopstore.errors import BlobIntegrityError, StoreUnavailableError

try:  # POSIX: two processes downloading one digest take turns on its part file
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; concurrent pulls of one digest are then unguarded
    fcntl = None

CHUNK = 1 << 20
ATTEMPTS = 4  # a dropped connection mid-blob is resumed from where it stopped, this many times per call

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_done, bytes_total)`` while a blob moves (``bytes_total`` 0 when unknown)."""

ChunkSource = Callable[[int], Iterable[bytes]]
"""``source(offset)`` yields a blob's bytes from ``offset`` on; raises :class:`RangeIgnored` when it can
only send the whole blob, and StoreUnavailableError for a transport failure (which is retried)."""


class RangeIgnored(Exception):
    """A source asked for the bytes from an offset can only send them from the start."""


@dataclass(frozen=True)
class BlobFile:
    """A local file whose bytes hash to ``digest`` (``size`` bytes long).

    ``origin`` is the URL of the blob store whose copy was just read to make this file (so that
    copy is known intact); None for files from anywhere else.
    """

    path: Path
    digest: str
    size: int
    origin: str | None = None

    @classmethod
    def hash(cls, path: str | os.PathLike, origin: str | None = None, progress: Progress | None = None) -> BlobFile:
        """Hash the file at ``path`` (one streamed pass). Only for files nothing else writes to."""
        path = Path(path)
        hasher, size = hashlib.sha256(), 0
        total = path.stat().st_size
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                hasher.update(chunk)
                size += len(chunk)
                _report(progress, size, total)
        return cls(path, hasher.hexdigest(), size, origin)


def iter_file(path: str | os.PathLike, start: int = 0, progress: Progress | None = None) -> Iterator[bytes]:
    """The bytes of the file at ``path`` from ``start`` on, one chunk at a time."""
    total = os.path.getsize(path)
    with open(path, "rb") as handle:
        handle.seek(start)
        done = start
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            done += len(chunk)
            _report(progress, done, total)
            yield chunk


def download_verified(source: ChunkSource, digest: str, dest: str | os.PathLike, *, size: int | None = None,
                      progress: Progress | None = None, where: str = "the source") -> BlobFile:
    """Stream the blob ``source`` yields into ``dest``, verified before it becomes visible there.

    The bytes go to ``{dest}.part`` while they are hashed; a part left by an interrupted call is
    resumed (its bytes hashed, the rest asked of ``source``). On a digest or size mismatch the part
    is deleted and BlobIntegrityError raised, so ``dest`` never holds unverified bytes.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _locked(part) as handle:
        if dest.is_file():  # another process finished this digest while we waited for its lock
            part.unlink(missing_ok=True)
            return BlobFile(dest, digest, dest.stat().st_size)
        resumed = _resume(handle, size)
        hasher, done = _fill(handle, source, resumed, size, progress)
        if hasher.hexdigest() != digest and resumed[1] > 0:  # a damaged part: one clean try from the start
            hasher, done = _fill(handle, source, _restart(handle), size, progress)
        handle.flush()
        os.fsync(handle.fileno())
        actual = hasher.hexdigest()
        if actual != digest or (size is not None and done != size):
            part.unlink(missing_ok=True)
            raise BlobIntegrityError(f"bytes from {where} do not hash to {digest[:12]}... (got {actual[:12]}..., "
                                 f"{done} bytes); refused and discarded: try again, or repair the source")
        os.replace(part, dest)
    return BlobFile(dest, digest, done)


def _resume(handle, size: int | None) -> tuple[hashlib._Hash, int]:
    """Hash what a part file already holds; start over when it holds more than the blob."""
    handle.seek(0, os.SEEK_END)
    held = handle.tell()
    if size is not None and held > size:
        return _restart(handle)
    handle.seek(0)
    hasher = hashlib.sha256()
    for chunk in iter(lambda: handle.read(CHUNK), b""):
        hasher.update(chunk)
    return hasher, held


def _restart(handle) -> tuple[hashlib._Hash, int]:
    handle.seek(0)
    handle.truncate()
    return hashlib.sha256(), 0


def _fill(handle, source: ChunkSource, start: tuple[hashlib._Hash, int], size: int | None,
          progress: Progress | None) -> tuple[hashlib._Hash, int]:
    """Append the source's bytes from the part's end; resume after dropped connections."""
    hasher, done = start
    failures = 0
    while size is None or done < size:
        try:
            for chunk in source(done):
                handle.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                _report(progress, done, size or 0)
                if size is not None and done > size:  # a source sending more than the blob: refused by the caller
                    return hasher, done
            break
        except RangeIgnored:  # the source restarts from byte 0: so does the part
            if done == 0:
                raise
            hasher, done = _restart(handle)
        except StoreUnavailableError as exc:
            failures += 1
            if failures == ATTEMPTS:
                raise  # the part stays: the next call resumes it
            time.sleep(min(10.0, getattr(exc, "retry_after", None) or 0.2 * 2 ** failures))  # a 429 says how long
    return hasher, done


@contextmanager
def _locked(part: Path):
    """The part file, open for reading and appending, held exclusively by this process."""
    while True:
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        handle = os.fdopen(fd, "r+b")
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # the holder before us may have renamed or removed the file we locked: lock the current one
                same = os.fstat(fd).st_ino == os.stat(part).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            handle.close()
            raise
        if same:
            break
        handle.close()
    try:
        yield handle
    finally:
        handle.close()


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
