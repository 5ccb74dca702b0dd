"""The blob backend protocol: a content-addressed, create-only object store.

Keys are ``{tenant}/sha256/{digest[:2]}/{digest}``: per tenant, so one tenant
cannot learn whether another holds the same bytes. Backends only move bytes;
:func:`read_verified` re-hashes on every read, so a flipped byte anywhere
(disk, bucket, network) is refused before anything uses it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterator, Protocol, runtime_checkable

from vopstore.checkpoint import sha256_bytes, validate_digest
from vopstore.errors import BlobNotFoundError, IntegrityError
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

    def get(self, key: str) -> bytes:
        """Return the bytes under ``key``; raise BlobNotFoundError if absent."""
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
        raise IntegrityError(
            f"blob {key} in {backend.url} is corrupt (sha256 {actual[:12]}..., expected {digest[:12]}...); "
            "restore it from another store with 'vopstore pull' or remove the version"
        )
    return data


def blob_intact(backend: BlobBackend, tenant: str, digest: str) -> bool:
    """Whether the blob is present and hashes to ``digest``."""
    try:
        read_verified(backend, tenant, digest)
    except (BlobNotFoundError, IntegrityError):
        return False
    return True


def write_blob(backend: BlobBackend, tenant: str, data: bytes) -> str:
    """Store ``data`` content-addressed for ``tenant``; return its digest."""
    digest = sha256_bytes(data)
    backend.put(blob_key(tenant, digest), data)
    return digest
