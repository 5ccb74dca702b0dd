"""Guards for blob keys and prefixes, shared by every backend.

Keys normally come from :func:`vopstore.blobs.base.blob_key`, but a backend is
also reachable with keys from elsewhere (a listing, an HTTP request), so each
backend re-checks them before they reach a filesystem path or a bucket key.
"""

from __future__ import annotations

import re

from vopstore.errors import InvalidRefError

# One path segment: starts with a letter or digit, so no '.', '..', hidden or temp names.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PREFIX_CHARS = re.compile(r"[A-Za-z0-9._/-]*")
MAX_KEY_LENGTH = 512
# vopstore's own bookkeeping (the store id) lives under this first segment. Its leading '_' can never
# start a tenant name, so no tenant's keys, and none of gc's candidates, ever fall under it.
RESERVED_SEGMENT = "_vopstore"


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative blob key (``a/b/c``), else raise InvalidRefError."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRefError(f"invalid blob key {key!r}: expected a non-empty key like 'tenant/sha256/ab/<digest>'")
    parts = key.split("/")
    if parts[0] == RESERVED_SEGMENT and len(parts) > 1:
        parts = parts[1:]
    if not all(_SEGMENT.fullmatch(part) and ".." not in part for part in parts):
        raise InvalidRefError(
            f"invalid blob key {key!r}: segments must start with a letter or digit and use only "
            "letters, digits, '.', '_' or '-', without '..', absolute paths or empty segments"
        )
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a valid key (may end mid-segment or with '/'), else raise."""
    if prefix == "":
        return prefix
    ok = (
        isinstance(prefix, str)
        and len(prefix) <= MAX_KEY_LENGTH
        and _PREFIX_CHARS.fullmatch(prefix)
        and ".." not in prefix
        and not prefix.startswith("/")
        and "//" not in prefix
    )
    if not ok:
        raise InvalidRefError(
            f"invalid blob key prefix {prefix!r}: expected the start of a key like 'tenant/' or "
            "'tenant/sha256/ab', without '..', a leading '/' or odd characters"
        )
    return prefix
