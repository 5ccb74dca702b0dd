"""push / pull: copy one version (blob + row) between two registries.

The blob goes first, then the version row in one transaction, so a crash never
leaves a visible version without its bytes. Copying again is a no-op; the same
``task@vN`` with another digest on the other side is refused; a copy whose
blob is missing or corrupt there is repaired by copying the bytes again. When the ref
names an alias, the alias is set on the destination too, so ``pull
acme/lsmdc@prod`` makes ``acme/lsmdc@prod`` resolve locally, offline.
"""

from __future__ import annotations

from vopstore.errors import BlobNotFoundError, ConflictError, IntegrityError
from vopstore.refs import parse_ref
from vopstore.store.info import VersionInfo
from vopstore.store.registry import Registry


def copy_version(src: Registry, dst: Registry, ref: str) -> tuple[VersionInfo, bool]:
    """Copy the version ``ref`` names from ``src`` to ``dst``; return (its info in ``dst``, whether new)."""
    info = src.resolve(ref)
    parsed = parse_ref(ref, src.default_tenant)
    aliases = (parsed.alias,) if parsed.alias else ()
    there = _find(dst, info.ref)
    if there is not None and there.digest == info.digest and _intact(dst, there):  # already copied: move no bytes
        for alias in aliases:
            there = dst.tag(there.ref, alias)
        return there, False
    data = src.read_blob(info)  # verified: corrupt bytes never leave the source
    return dst.import_version(info, data, aliases)  # refuses a diverged version itself


def _find(registry: Registry, ref: str) -> VersionInfo | None:
    try:
        return registry.resolve(ref)
    except LookupError:
        return None


def _intact(registry: Registry, info: VersionInfo) -> bool:
    """Whether ``registry`` holds the version's bytes uncorrupted (else copying them again repairs it)."""
    try:
        registry.read_blob(info)
    except (BlobNotFoundError, IntegrityError):
        return False
    return True


def push(src: Registry, dst: Registry, ref: str, *, force: bool = False) -> VersionInfo:
    """Copy a version from ``src`` (usually the local store) to ``dst`` (a remote).

    Pushing ``task@alias`` refuses to move an alias that already points at another
    version on the remote (someone else promoted it) unless ``force``. The check and
    the move are one step: the alias is set with a compare-and-swap against what the
    check saw, so a promotion made on the remote in between is never silently undone.
    """
    parsed = parse_ref(ref, src.default_tenant)
    if parsed.alias is None or force:
        info, _ = copy_version(src, dst, ref)
        return info
    mine = src.resolve(ref)
    theirs = _find(dst, str(parsed))
    if theirs is not None and theirs.digest != mine.digest:
        raise ConflictError(
            f"{parsed} points at v{theirs.number} on the remote but at v{mine.number} here; pull it to compare, "
            f"push {parsed.task_ref}@v{mine.number} to copy the version without the alias, or --force to move it"
        )
    info, _ = copy_version(src, dst, mine.ref)  # the exact version, without the alias
    return dst.tag(info.ref, parsed.alias, expected_digest=theirs.digest if theirs is not None else "")


def pull(src: Registry, dst: Registry, ref: str) -> VersionInfo:
    """Copy a version from ``src`` (a remote) into ``dst`` and place its verified file in the local cache."""
    info, _ = copy_version(src, dst, ref)
    dst.fetch(info)
    return info
