"""Blob stores: a create-only, content-addressed object store behind one small protocol.

:func:`open_blobs` is the one way in: ``file:///abs/dir`` or a plain path gives
a :class:`~vopstore.blobs.local.LocalBlobs`, ``s3://bucket/prefix`` an
:class:`~vopstore.blobs.s3.S3Blobs`. boto3 is imported only when an S3 store
is opened.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from vopstore.blobs.base import BlobBackend, blob_key, download_blob, read_verified, write_blob
from vopstore.blobs.local import LocalBlobs
from vopstore.blobs.transfer import BlobFile
from vopstore.errors import ConfigError

__all__ = ["BlobBackend", "BlobFile", "blob_key", "download_blob", "open_blobs", "read_verified", "write_blob"]

_SUPPORTED = "use file:///absolute/dir, a local folder path, or s3://bucket[/prefix]"
# 'C:\\blobs' parses as scheme 'c': a one-letter scheme is a Windows drive, not a URL.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def open_blobs(url: str) -> BlobBackend:
    """Open the blob store that ``url`` names.

    Args:
        url: ``file:///abs/dir``, a local folder path (``~`` expanded), or
            ``s3://bucket[/prefix]`` (endpoint and credentials from boto3's
            standard configuration, e.g. ``AWS_ENDPOINT_URL``).

    Returns:
        A backend implementing :class:`BlobBackend`.

    Raises:
        ConfigError: the URL is empty or uses an unsupported scheme.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"empty blob store URL {url!r}: {_SUPPORTED}")
    match = _SCHEME.match(url)
    if match is None:
        if "://" in url or url.startswith("s3:"):
            raise ConfigError(f"unsupported blob store URL {url!r}: {_SUPPORTED}")
        return LocalBlobs(Path(url))
    scheme = match.group(1).lower()
    if scheme == "file":
        return _open_file(url)
    if scheme == "s3":
        return _open_s3(url)
    raise ConfigError(f"unsupported blob store scheme {scheme!r} in {url!r}: {_SUPPORTED}")


def _open_file(url: str) -> BlobBackend:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path or parts.query or parts.fragment:
        raise ConfigError(
            f"invalid file URL {url!r}: expected file:///absolute/dir (three slashes, no host, query or fragment)"
        )
    return LocalBlobs(url2pathname(parts.path))


def _open_s3(url: str) -> BlobBackend:
    parts = urlsplit(url)
    if not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"invalid S3 URL {url!r}: expected s3://bucket[/prefix] without query or fragment")
    from vopstore.blobs.s3 import S3Blobs  # boto3

    return S3Blobs(parts.netloc, parts.path.strip("/"))
