"""The content-addressed local cache of verified blobs (``$VOPSTORE_HOME/cache``).

Any store's blobs land here after their sha256 has been checked, keyed by tenant and
digest (``{tenant}/sha256/{aa}/{digest}``, like blob keys: a handle scoped to one tenant is
never served another tenant's copy), so a prompt set fetched once loads later with every
remote gone. Without a tenant the key is the digest alone (``sha256/{aa}/{digest}``). Hits are
re-hashed too (0.5 MB costs about a millisecond): a file damaged on disk is
dropped and fetched again instead of being used.

Big blobs stream in: a download writes ``{path}.part`` while hashing and renames it into
place once verified (:func:`vopstore.blobs.transfer.download_verified`), so an interrupted
download resumes from its part, and a file verified elsewhere is :meth:`BlobCache.adopt`-ed
without hashing it again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vopstore.blobs.transfer import BlobFile
from vopstore.core import atomic_write, atomic_write_bytes, sha256_bytes, sha256_file, validate_digest
from vopstore.errors import BlobIntegrityError
from vopstore.home import cache_dir
from vopstore.refs import validate_name


class BlobCache:
    """Verified blobs on local disk, one file per digest."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir()

    def path(self, digest: str, tenant: str | None = None) -> Path:
        """Where the blob with ``digest`` of ``tenant`` lives (whether or not it is there)."""
        validate_digest(digest)
        root = self.root if tenant is None else self.root / validate_name(tenant, "tenant")
        return root / "sha256" / digest[:2] / f"{digest}.safetensors"

    def get(self, digest: str, tenant: str | None = None) -> Path | None:
        """The cached file for ``digest`` (of ``tenant``) if present and intact; a damaged copy is removed."""
        path = self.path(digest, tenant)
        if not path.is_file():
            return None
        if sha256_file(path) != digest:
            path.unlink(missing_ok=True)
            return None
        return path

    def put(self, digest: str, data: bytes, tenant: str | None = None) -> Path:
        """Store ``data`` (which must hash to ``digest``) atomically for ``tenant``; return its path."""
        actual = sha256_bytes(data)
        if actual != digest:
            raise BlobIntegrityError(f"refusing to cache bytes with sha256 {actual[:12]}... under {digest[:12]}...")
        path = self.path(digest, tenant)
        atomic_write_bytes(path, data)
        return path

    def adopt(self, blob: BlobFile, tenant: str | None = None) -> Path:
        """Place a copy of an already verified file in the cache for ``tenant`` (not hashed again); return its path."""
        path = self.path(blob.digest, tenant)
        if path == blob.path or path.is_file():
            return path
        with atomic_write(path, mode=0o644) as tmp:
            shutil.copyfile(blob.path, tmp)
        return path
