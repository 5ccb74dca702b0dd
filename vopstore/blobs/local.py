"""A blob backend on a local folder: one file per key, written atomically and create-only."""

from __future__ import annotations

import errno
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from vopstore.blobs.keys import validate_key, validate_prefix
from vopstore.blobs.transfer import CHUNK, Progress, iter_file
from vopstore.core import fsync_dir
from vopstore.errors import BlobNotFoundError, PermissionDeniedError, StoreUnavailableError

# Filesystems without hard links (some FUSE/SMB mounts) answer os.link with one of these.
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}


class LocalBlobs:
    """Blobs stored as files under ``root`` (created on first write).

    A put writes a temp file in the key's own folder, fsyncs it and hard-links it
    into place: ``os.link`` fails if the name exists, so two concurrent writers of
    one key never overwrite or truncate each other and a reader never sees a
    half-written file.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().absolute()
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalBlobs({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The file that holds ``key`` (validated, always inside ``root``)."""
        return self.root.joinpath(*validate_key(key).split("/"))

    def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key``; False (and no write) if the key already exists."""
        return self._publish(key, lambda out: out.write(data))

    def put_file(self, key: str, path: str | os.PathLike, *, progress: Progress | None = None) -> bool:
        """Store a copy of the file at ``path`` under ``key`` (streamed); False if the key already exists."""
        def copy(out: BinaryIO) -> None:
            for chunk in iter_file(path, progress=progress):
                out.write(chunk)

        return self._publish(key, copy)

    def _publish(self, key: str, write: Callable[[BinaryIO], object]) -> bool:
        target = self.path(key)
        if target.is_file():
            return False
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._write_temp(target.parent, write)
            try:
                created = _link_create_only(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            if created:
                fsync_dir(target.parent)
            return created
        except OSError as err:
            raise self._os_error("write", key, err) from err

    def get(self, key: str) -> bytes:
        """Return the bytes under ``key``; BlobNotFoundError if absent."""
        target = self.path(key)
        try:
            return target.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            raise BlobNotFoundError(f"no blob {key} in {self.url}; push the version again or pull it") from err
        except OSError as err:
            raise self._os_error("read", key, err) from err

    def read_range(self, key: str, start: int = 0) -> Iterator[bytes]:
        """Yield the bytes under ``key`` from offset ``start`` on; BlobNotFoundError if absent."""
        target = self.path(key)
        try:
            handle = open(target, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            raise BlobNotFoundError(f"no blob {key} in {self.url}; push the version again or pull it") from err
        except OSError as err:
            raise self._os_error("read", key, err) from err
        with handle:
            handle.seek(start)
            yield from iter(lambda: handle.read(CHUNK), b"")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def modified(self, key: str) -> datetime:
        """When ``key`` was written (UTC); BlobNotFoundError if absent. gc's grace reads it."""
        try:
            return datetime.fromtimestamp(self.path(key).stat().st_mtime, timezone.utc)
        except (FileNotFoundError, NotADirectoryError) as err:
            raise BlobNotFoundError(f"no blob {key} in {self.url}") from err
        except OSError as err:
            raise self._os_error("stat", key, err) from err

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        try:
            self.path(key).unlink(missing_ok=True)
        except IsADirectoryError:
            pass
        except OSError as err:
            raise self._os_error("delete", key, err) from err

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix``, sorted; temp files are never listed."""
        validate_prefix(prefix)
        # Walk only the deepest folder the prefix fully names.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*[p for p in folder.split("/") if p])
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix) and _is_key(key):
                    keys.append(key)
        yield from sorted(keys)

    def _write_temp(self, folder: Path, write: Callable[[BinaryIO], object]) -> Path:
        # A leading '.' makes the name an invalid key, so list() never shows it.
        tmp = folder / f".tmp-{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _os_error(self, action: str, key: str, err: OSError) -> Exception:
        if isinstance(err, PermissionError):
            return PermissionDeniedError(
                f"cannot {action} blob {key} in {self.url}: {err.strerror}; check the folder's permissions"
            )
        return StoreUnavailableError(
            f"cannot {action} blob {key} in {self.url}: {err.strerror or err}; check the disk and the folder"
        )


def _link_create_only(tmp: Path, target: Path) -> bool:
    """Publish ``tmp`` as ``target`` unless it exists; True if this call created it."""
    try:
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    except OSError as err:
        if err.errno not in _NO_LINK:
            raise
    # No hard links here: rename is still atomic; a concurrent writer of the same
    # key can only replace it with identical bytes (keys are content addresses).
    if target.exists():
        return False
    os.replace(tmp, target)
    return True


def _is_key(key: str) -> bool:
    try:
        validate_key(key)
    except ValueError:
        return False
    return True
