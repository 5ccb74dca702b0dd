"""A version's bytes on their way into a store: ``bytes`` in memory (small prompt sets) or a
:class:`~vopstore.blobs.transfer.BlobFile` on disk (big versions, which are never read into memory whole).

A BlobFile's digest was computed from its bytes by whoever made it, so nothing here hashes a file
again; ``bytes`` are hashed where their digest is needed. A file is validated through a read-only
memory map: the checkpoint checks read its pages, the process never copies them.
"""

from __future__ import annotations

import mmap
from typing import Union

from vopstore.blobs.transfer import BlobFile, Progress
from vopstore.checkpoint import PromptSetMeta, parse_checkpoint_bytes
from vopstore.core import sha256_bytes

Payload = Union[bytes, BlobFile]


def digest_of(payload: Payload) -> str:
    """The payload's sha256 (hashed for bytes; a file's was taken when it was made)."""
    return payload.digest if isinstance(payload, BlobFile) else sha256_bytes(payload)


def size_of(payload: Payload) -> int:
    return payload.size if isinstance(payload, BlobFile) else len(payload)


def parse_payload(payload: Payload, source: str, *, contents: bool) -> tuple[PromptSetMeta, dict]:
    """Validate the payload as a checkpoint (see :func:`~vopstore.checkpoint.parse_checkpoint_bytes`)."""
    if not isinstance(payload, BlobFile):
        return parse_checkpoint_bytes(payload, source, contents=contents)
    if payload.size == 0:  # an empty file cannot be mapped; it is refused as too short all the same
        return parse_checkpoint_bytes(b"", source, contents=contents)
    with open(payload.path, "rb") as handle:
        view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return parse_checkpoint_bytes(view, source, contents=contents)
    finally:
        try:
            view.close()
        except BufferError:  # a traceback still holds a view of it: it closes when collected
            pass


def put_payload(blobs, key: str, payload: Payload, progress: Progress | None = None) -> bool:
    """Store the payload under ``key`` create-only (a file streamed); True if this call wrote it."""
    if isinstance(payload, BlobFile):
        return blobs.put_file(key, payload.path, progress=progress)
    return blobs.put(key, payload)


def intact_at(payload: Payload, blobs) -> bool:
    """Whether the payload was just read, verified, from ``blobs`` itself (so its copy there needs no re-check)."""
    return isinstance(payload, BlobFile) and payload.origin is not None and payload.origin == blobs.url
