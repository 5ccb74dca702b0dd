"""The one interface every store implements: direct (database + blobs) and HTTP (the registry server's client)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

from vopstore.blobs.transfer import BlobFile, Progress
from vopstore.store.cache import BlobCache
from vopstore.store.info import TaskInfo, VersionInfo


@runtime_checkable
class Registry(Protocol):
    """A versioned store of prompt sets, optionally scoped to one tenant.

    ``url`` names it; ``tenant`` is the tenant it is scoped to (None: every tenant,
    for a trusted direct store). Refs without a tenant mean ``default_tenant``.
    """

    url: str
    tenant: str | None
    default_tenant: str
    cache: BlobCache

    def add(self, task: str, path: str | Path, *, metrics: dict | None = None, message: str | None = None,
            training_config: dict | None = None, parent: str | None = None) -> VersionInfo:
        """Validate the checkpoint at ``path`` and register it as the next version of ``task``."""
        ...

    def resolve(self, ref: str) -> VersionInfo:
        """The version ``[tenant/]task[@vN|@alias]`` names (latest when no selector)."""
        ...

    def fetch(self, ref_or_info: str | VersionInfo, *, progress: Progress | None = None) -> Path:
        """A verified local copy of the version's file, in the content-addressed cache (streamed in)."""
        ...

    def read_blob(self, info: VersionInfo) -> bytes:
        """The version's bytes, verified against its digest (small blobs: the whole file in memory)."""
        ...

    def open_blob(self, info: VersionInfo, *, progress: Progress | None = None) -> AbstractContextManager[BlobFile]:
        """A verified local file of the version's bytes for a ``with`` block (what push and pull send)."""
        ...

    def import_version(self, info: VersionInfo, data: bytes | BlobFile, aliases: tuple[str, ...] = (), *,
                       progress: Progress | None = None) -> tuple[VersionInfo, bool]:
        """Store a version copied from another store under the same number; (info, created).

        ``data`` is the bytes, or a verified local file (streamed, not read into memory).
        """
        ...

    def list_tasks(self) -> list[TaskInfo]: ...

    def list_versions(self, task: str) -> list[VersionInfo]: ...

    def tag(self, ref: str, alias: str, *, expected_digest: str | None = None) -> VersionInfo: ...

    def untag(self, task: str, alias: str) -> None: ...

    def remove(self, ref: str, force: bool = False) -> VersionInfo: ...

    def verify(self, ref: str | None = None) -> list[str]: ...

    def log(self, task: str | None = None, limit: int | None = None) -> list[dict]:
        """The audit log of ``task`` (or of the whole tenant): who changed what, when, old and new value."""
        ...

    def gc(self, grace_s: float = 3600.0, dry_run: bool = False, force: bool = False) -> int: ...

    def close(self) -> None: ...
