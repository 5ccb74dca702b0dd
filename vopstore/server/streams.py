"""Blob bodies in and out of the registry server, streamed: a big version never sits in a worker's memory.

Downloads answer ``Range: bytes=N-`` (what a resumed client sends) with 206 and the rest of the
blob. A whole-blob download is hashed on the way out and its last chunk held back until the hash
matches: a corrupt blob breaks off one chunk short, so no client can take it for complete (clients
verify every download themselves too; a ranged one is checked by the client alone).

Uploads are spooled to a temporary file while they are hashed and counted against the size limit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import AsyncIterable, Iterator

from vopstore.blobs.base import BlobBackend
from vopstore.blobs.transfer import BlobFile
from vopstore.errors import BlobIntegrityError, QuotaExceededError

log = logging.getLogger("vopstore.server")
_OPEN_RANGE = re.compile(r"bytes=(\d+)-")


def range_start(header: str | None) -> int:
    """Where a ``Range: bytes=N-`` asks the body to start; 0 (the whole blob) for no or any other range.

    Other forms (``N-M``, suffixes, several ranges) are answered with the whole blob, as HTTP allows.
    """
    match = _OPEN_RANGE.fullmatch(header.strip()) if header else None
    return int(match.group(1)) if match else 0


def blob_body(backend: BlobBackend, key: str, digest: str, start: int) -> Iterator[bytes]:
    """The blob's bytes from ``start`` on; the backend is asked at once, so a missing blob raises here (a 404)."""
    chunks = iter(backend.read_range(key, start))
    first = next(chunks, b"")
    return _held_back(first, chunks, digest, key) if start == 0 else _prepend(first, chunks)


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _held_back(first: bytes, rest: Iterator[bytes], digest: str, key: str) -> Iterator[bytes]:
    """Yield every chunk but the last as it comes; the last only if the whole hashes to ``digest``."""
    hasher, pending = hashlib.sha256(first), first
    for chunk in rest:
        yield pending
        hasher.update(chunk)
        pending = chunk
    if hasher.hexdigest() != digest:
        log.error("blob %s is corrupt (sha256 %s...); its download was cut short", key, hasher.hexdigest()[:12])
        raise BlobIntegrityError(f"blob {key} is corrupt; restore it with 'vopstore push' or remove the version")
    yield pending


async def spool(body: AsyncIterable[bytes], digest: str, limit: int, folder: str | os.PathLike) -> BlobFile:
    """Write an upload's body to a file in ``folder`` while hashing it; refuse it over ``limit`` or not ``digest``."""
    path = Path(folder) / "upload"
    hasher, size = hashlib.sha256(), 0
    with open(path, "wb") as out:
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise QuotaExceededError(f"upload is over this registry's limit of {limit} bytes")
            hasher.update(chunk)
            out.write(chunk)
    if hasher.hexdigest() != digest:
        raise BlobIntegrityError(f"the body's sha256 is {hasher.hexdigest()[:12]}..., not {digest[:12]}... as the URL "
                             "says; the upload was damaged or cut short: send it again")
    return BlobFile(path, digest, size)
