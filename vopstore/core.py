"""The small core every part of vopstore may use: hashing, canonical JSON, atomic writes, retries, device.

Nothing here knows a file format or a store; modules that define those import from here,
never from each other for these helpers. It imports only the standard library (torch only
inside :func:`default_device`), so the fast paths (``vopstore ls``, the store, the schema
checks) can use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from vopstore.errors import BlobIntegrityError

T = TypeVar("T")
_HEX = frozenset("0123456789abcdef")
SHORT_DIGEST_CHARS = 12


def canonical_json(obj: Any) -> str:
    """Serialise ``obj`` deterministically: sorted keys, compact separators, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def short_digest(obj: Any) -> str:
    """The first 12 hex digits of the sha256 of ``obj``'s canonical JSON: a stable name for a config."""
    return sha256_bytes(canonical_json(obj).encode("utf-8"))[:SHORT_DIGEST_CHARS]


def is_sha256(text: str) -> bool:
    """Whether ``text`` is a sha256 hex digest: 64 lowercase hex digits."""
    return isinstance(text, str) and len(text) == 64 and set(text) <= _HEX


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is a sha256 hex digest, else raise BlobIntegrityError (a ValueError)."""
    if not is_sha256(digest):
        raise BlobIntegrityError(f"invalid sha256 digest {digest!r}: expected 64 lowercase hex digits")
    return digest


def sha256_bytes(data: bytes) -> str:
    """The sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_write(path: str | os.PathLike, mode: int | None = None, *, keep_suffix: bool = False,
                 durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends, make it ``path`` in one rename.

    For writers that produce the file themselves (``np.save``, ``av.open``, ``torch.save``). The
    temporary name starts with a dot and ends with ``.tmp``, so listings of ``*.safetensors`` or
    blob keys never see it; ``keep_suffix`` appends ``path``'s suffix for libraries that pick a
    format by suffix (PyAV). On success the file is fsynced, given ``mode`` (by default what a plain
    ``open(path, "w")`` gives: 0o666 less the umask, not mkstemp's 0o600), renamed over ``path``
    and the folder fsynced, so after a crash ``path`` holds the old bytes or the new ones. On any
    error (a full disk, an interrupt) the temporary file is removed and the error propagates.

    ``durable=False`` skips both fsyncs (about 5 ms a file on a local SSD): for caches, where a
    file torn by a crash is only a miss. Readers still see a whole file or none.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{path.suffix}" if keep_suffix else ".tmp"
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically and durably (see :func:`atomic_write`)."""
    with atomic_write(path, mode) as tmp:
        tmp.write_bytes(data)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a new or renamed entry of ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (threads may be creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only portable way to read it is to set it
    os.umask(mask)
    return mask


def retry(call: Callable[[], T], *, attempts: int, when: Callable[[Exception], bool],
          wait: Callable[[int], float] = lambda attempt: 0.0) -> T:
    """Return ``call()``, calling it again (after ``wait(attempt)`` seconds) while it raises an error ``when`` accepts.

    At most ``attempts`` calls in all; the last call's error, and any error ``when`` refuses,
    propagate unchanged, so the caller translates them in one place.
    """
    for attempt in range(attempts - 1):
        try:
            return call()
        except Exception as exc:
            if not when(exc):
                raise
        delay = wait(attempt)
        if delay > 0:
            time.sleep(delay)
    return call()


def default_device(local_rank: int | None = None) -> str:
    """Where to run by default: the GPU (``cuda:<local_rank>`` under ``torchrun``) when there is one, else the CPU."""
    import torch  # heavy: only the commands that load a model ask

    if not torch.cuda.is_available():
        return "cpu"
    return "cuda" if local_rank is None else f"cuda:{local_rank}"
