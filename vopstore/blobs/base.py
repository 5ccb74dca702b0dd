"""The blob backend protocol: a content-addressed, create-only object store.

Keys are ``{tenant}/sha256/{digest[:2]}/{digest}``: per tenant, so one tenant
cannot learn whether another holds the same bytes. Backends only move bytes;
:func:`read_verified` and :func:`download_blob` re-hash on every read, so a flipped
byte anywhere (disk, bucket, network) is refused before anything uses it.

Small blobs (manifests, prompt sets) move as ``bytes``; big ones (a full fine-tune is
hundreds of MB) move as files and chunk streams: :meth:`BlobBackend.put_file`,
:meth:`BlobBackend.read_range` and :func:`download_blob`, which never hold a whole blob in memory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

from vopstore.blobs.transfer import BlobFile, Progress, download_verified
from vopstore.core import sha256_bytes, validate_digest
from vopstore.errors import BlobIntegrityError, BlobNotFoundError
from vopstore.refs import validate_name

def blob_key(tenant: str, digest: str) -> str:
    """The key of a blob; validates both parts so no user string reaches a path or bucket unchecked."""
    validate_name(tenant, "tenant")
    validate_digest(digest)
    return f"{tenant}/sha256/{digest[:2]}/{digest}"


def is_blob_key(key: str) -> bool:
    """Whether ``key`` has exactly the shape :func:`blob_key` gives (``{tenant}/sha256/{aa}/{digest}``)."""
    parts = key.split("/")
    if len(parts) != 4 or parts[1] != "sha256":
        return False
    try:
        return blob_key(parts[0], parts[3]) == key
    except ValueError:
        return False


@runtime_checkable
class BlobBackend(Protocol):
    """What every blob backend implements. ``url`` names it (``file:///...``, ``s3://bucket/prefix``)."""

    url: str

    def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` atomically and create-only.

        Returns True if written, False if the key already existed (content addressing
        makes an existing key hold the same bytes, so this is a no-op, never an overwrite).
        Raises StoreUnavailableError when the backend cannot be reached.
        """
        ...

    def put_file(self, key: str, path: str | os.PathLike, *, progress: Progress | None = None) -> bool:
        """:meth:`put` for the bytes of the local file at ``path``, streamed (S3: a multipart upload)."""
        ...

    def get(self, key: str) -> bytes:
        """Return the bytes under ``key``; raise BlobNotFoundError if absent."""
        ...

    def read_range(self, key: str, start: int = 0) -> Iterator[bytes]:
        """Yield the bytes under ``key`` from offset ``start`` on, in chunks; BlobNotFoundError if absent.

        The request is made at the first ``next()``, so a missing key raises there.
        """
        ...

    def exists(self, key: str) -> bool: ...

    def modified(self, key: str) -> datetime:
        """When ``key`` was written (timezone-aware UTC); BlobNotFoundError if absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key that starts with ``prefix``."""
        ...


def read_verified(backend: BlobBackend, tenant: str, digest: str) -> bytes:
    """Read a blob and check that it hashes to ``digest``."""
    key = blob_key(tenant, digest)
    data = backend.get(key)
    actual = sha256_bytes(data)
    if actual != digest:
        raise BlobIntegrityError(
            f"blob {key} in {backend.url} is corrupt (sha256 {actual[:12]}..., expected {digest[:12]}...); "
            "restore it from another store with 'vopstore pull' or remove the version"
        )
    return data


def blob_intact(backend: BlobBackend, tenant: str, digest: str) -> bool:
    """Whether the blob is present and hashes to ``digest`` (streamed: a big blob is never held whole)."""
    hasher = hashlib.sha256()
    try:
        for chunk in backend.read_range(blob_key(tenant, digest)):
            hasher.update(chunk)
    except BlobNotFoundError:
        return False
    return hasher.hexdigest() == digest


def write_blob(backend: BlobBackend, tenant: str, data: bytes) -> str:
    """Store ``data`` content-addressed for ``tenant``; return its digest."""
    digest = sha256_bytes(data)
    backend.put(blob_key(tenant, digest), data)
    return digest


def download_blob(backend: BlobBackend, tenant: str, digest: str, dest: str | os.PathLike, *,
                  size: int | None = None, progress: Progress | None = None) -> BlobFile:
    """Stream a blob into the file ``dest``, verified before it appears there (see :func:`download_verified`).

    An interrupted download resumes from its ``{dest}.part`` with a ranged read of the rest.
    """
    key = blob_key(tenant, digest)
    try:
        blob = download_verified(lambda start: backend.read_range(key, start), digest, dest, size=size,
                                 progress=progress, where=f"{backend.url}/{key}")
    except BlobIntegrityError as exc:
        raise BlobIntegrityError(f"blob {key} in {backend.url} is corrupt ({exc}); restore it from another store "
                             "with 'vopstore pull' or remove the version") from None
    return BlobFile(blob.path, digest, blob.size, origin=backend.url)


@contextmanager
def open_blob_file(backend: BlobBackend, tenant: str, digest: str, *, size: int | None = None,
                   progress: Progress | None = None) -> Iterator[BlobFile]:
    """A verified local file of the blob for the ``with`` block: the stored file itself when the backend is a
    local folder (hashed in place), else a temporary download that is removed afterwards."""
    key = blob_key(tenant, digest)
    local = local_blob_path(backend, key)
    if local is not None:
        if not local.is_file():
            raise BlobNotFoundError(f"no blob {key} in {backend.url}; push the version again or pull it")
        blob = BlobFile.hash(local, origin=backend.url)
        if blob.digest != digest:
            raise BlobIntegrityError(f"blob {key} in {backend.url} is corrupt (sha256 {blob.digest[:12]}..., expected "
                                 f"{digest[:12]}...); restore it from another store with 'vopstore pull' or remove "
                                 "the version")
        yield blob
        return
    with tempfile.TemporaryDirectory(prefix="vopstore-blob-") as folder:
        yield download_blob(backend, tenant, digest, Path(folder) / digest, size=size, progress=progress)


def local_blob_path(backend: BlobBackend, key: str) -> Path | None:
    """The file that holds ``key`` when the backend is a local folder (wrappers pass ``path`` through)."""
    try:
        return backend.path(key)
    except AttributeError:
        return None
