"""push / pull: copy one version (blob + row) between two registries.

The blob goes first, then the version row in one transaction, so a crash never
leaves a visible version without its bytes. Copying again is a no-op; the same
``task@vN`` with another digest on the other side is refused; a copy whose
blob is missing or corrupt there is repaired by copying the bytes again. When the ref
names an alias, the alias is set on the destination too, so ``pull
acme/lsmdc@prod`` makes ``acme/lsmdc@prod`` resolve locally, offline.

The bytes go one way: the source hands over a verified local file (hashed once, on
the way in; a remote's download resumes from its ``.part`` file), the destination
validates and stores that file without hashing it again, and a pull leaves the same
file in the local cache instead of reading the stored copy back.
"""

from __future__ import annotations

from typing import Callable

from vopstore.blobs.transfer import BlobFile, Progress
from vopstore.errors import ConflictError
from vopstore.refs import Ref, parse_ref
from vopstore.store.info import VersionInfo
from vopstore.store.registry import Registry


def copy_version(src: Registry, dst: Registry, ref: str, *,
                 progress: Progress | None = None) -> tuple[VersionInfo, bool]:
    """Copy the version ``ref`` names from ``src`` to ``dst``; return (its info in ``dst``, whether new)."""
    parsed = parse_ref(ref, src.default_tenant)
    return _copy(src, dst, src.resolve(str(parsed)), _aliases(parsed), progress)


def _copy(src: Registry, dst: Registry, info: VersionInfo, aliases: tuple[str, ...], progress: Progress | None,
          keep: Callable[[BlobFile], None] | None = None) -> tuple[VersionInfo, bool]:
    there = _find(dst, info.ref)
    if there is not None and there.digest == info.digest and _intact(dst, there):  # already copied: move no bytes
        for alias in aliases:
            there = dst.tag(there.ref, alias)
        return there, False
    with src.open_blob(info, progress=progress) as blob:  # verified: corrupt bytes never leave the source
        copied = dst.import_version(info, blob, aliases, progress=progress)  # refuses a diverged version itself
        if keep is not None:
            keep(blob)
    return copied


def _aliases(parsed: Ref) -> tuple[str, ...]:
    return (parsed.alias,) if parsed.alias else ()


def _find(registry: Registry, ref: str) -> VersionInfo | None:
    try:
        return registry.resolve(ref)
    except LookupError:
        return None


def _intact(registry: Registry, info: VersionInfo) -> bool:
    """Whether ``registry`` holds the version's bytes uncorrupted (else copying them again repairs it).

    The registry checks its own copy (a registry server re-hashes it where it lives): no bytes travel.
    """
    return not registry.verify(info.ref)


def push(src: Registry, dst: Registry, ref: str, *, force: bool = False,
         progress: Progress | None = None) -> VersionInfo:
    """Copy a version from ``src`` (usually the local store) to ``dst`` (a remote).

    Pushing ``task@alias`` refuses to move an alias that already points at another
    version on the remote (someone else promoted it) unless ``force``. The check and
    the move are one step: the alias is set with a compare-and-swap against what the
    check saw, so a promotion made on the remote in between is never silently undone.
    """
    parsed = parse_ref(ref, src.default_tenant)
    mine = src.resolve(str(parsed))
    if parsed.alias is None or force:
        return _copy(src, dst, mine, _aliases(parsed), progress)[0]
    theirs = _find(dst, str(parsed))
    if theirs is not None and theirs.digest != mine.digest:
        raise ConflictError(
            f"{parsed} points at v{theirs.number} on the remote but at v{mine.number} here; pull it to compare, "
            f"push {parsed.task_ref}@v{mine.number} to copy the version without the alias, or --force to move it"
        )
    info, _ = _copy(src, dst, mine, (), progress)  # the exact version, without the alias
    return dst.tag(info.ref, parsed.alias, expected_digest=theirs.digest if theirs is not None else "")


def pull(src: Registry, dst: Registry, ref: str, *, progress: Progress | None = None) -> VersionInfo:
    """Copy a version from ``src`` (a remote) into ``dst`` and place its verified file in the local cache.

    The file the source handed over is the one cached: nothing is read back from ``dst``.
    """
    parsed = parse_ref(ref, src.default_tenant)
    info = src.resolve(str(parsed))
    cached = []

    def keep(blob: BlobFile) -> None:  # inside the copy: the source's file may be gone after it
        cached.append(dst.cache.adopt(blob, info.tenant))

    copied, _ = _copy(src, dst, info, _aliases(parsed), progress, keep)
    if not cached:  # no bytes moved (already there): fill the cache from the destination's own copy
        dst.fetch(copied, progress=progress)
    return copied
