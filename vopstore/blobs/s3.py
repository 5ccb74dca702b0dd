"""A blob backend on any S3-compatible store (AWS, MinIO, SeaweedFS, moto), through boto3.

The endpoint, credentials and region come from boto3's standard configuration
(``AWS_ENDPOINT_URL[_S3]``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``~/.aws/config``), so one store URL works everywhere.
Create-only puts use a conditional write (``If-None-Match: *``); files larger than one
part (``$VOPSTORE_S3_PART_SIZE``, default 16 MiB) go up as a resumable multipart upload
(:mod:`vopstore.blobs.multipart`) and come down as ranged, streamed reads.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from typing import Any, Iterator

import boto3.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from vopstore.blobs.keys import validate_key, validate_prefix
from vopstore.blobs.multipart import MultipartPut, plan_parts
from vopstore.blobs.transfer import CHUNK, Progress
from vopstore.core import retry
from vopstore.errors import (
    BlobNotFoundError,
    ConfigError,
    PermissionDeniedError,
    StoreUnavailableError,
    VopstoreError,
)

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "403"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_EXISTS = {"PreconditionFailed", "412"}
# AWS answers 409 when another conditional write of the same key is in flight: try again.
_CONFLICT = {"ConditionalRequestConflict", "409"}
_BAD_RANGE = {"InvalidRange", "416"}
DEFAULT_PART_SIZE = 16 << 20
UPLOAD_CONCURRENCY = 4  # parts in flight per upload: memory is about this many parts


def part_size_setting() -> int:
    """The multipart part size: ``$VOPSTORE_S3_PART_SIZE`` bytes, else 16 MiB (files up to one part: one PUT)."""
    raw = os.environ.get("VOPSTORE_S3_PART_SIZE")
    if raw is None:
        return DEFAULT_PART_SIZE
    if not raw.isdigit():
        raise ConfigError(f"VOPSTORE_S3_PART_SIZE must be a number of bytes, got {raw!r}; e.g. 16777216 (16 MiB)")
    plan_parts(0, int(raw))  # refuses one under S3's 5 MiB minimum
    return int(raw)


def client_config() -> Config:
    """Short timeouts and few retries, so an unreachable endpoint fails in seconds, not minutes."""
    raw = os.environ.get("AWS_MAX_ATTEMPTS", "2")
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"AWS_MAX_ATTEMPTS must be a positive integer, got {raw!r}; unset it or set e.g. 3")
    attempts = int(raw)
    return Config(
        connect_timeout=2,
        read_timeout=30,
        retries={"max_attempts": attempts, "mode": os.environ.get("AWS_RETRY_MODE", "standard")},
    )


def make_client() -> Any:
    """A boto3 S3 client from the standard configuration; path-style addressing on custom endpoints.

    Self-hosted servers rarely resolve ``bucket.host`` names, so any endpoint that is
    not AWS gets path-style URLs (``host/bucket/key``).
    """
    # A fresh session, not boto3's module-wide default one: that one caches the
    # credentials it first found, so later changes to the environment would be ignored.
    session = boto3.session.Session()
    path_style = client_config().merge(Config(s3={"addressing_style": "path"}))
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return session.client("s3", config=path_style)
    client = session.client("s3", config=client_config())
    # An endpoint may also come from ~/.aws/config; only the built client knows.
    if "amazonaws.com" not in (client.meta.endpoint_url or ""):
        client = session.client("s3", config=path_style)
    return client


class S3Blobs:
    """Blobs stored as objects ``{prefix}/{key}`` in one bucket."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None, *, part_size: int | None = None):
        if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ConfigError(
                f"invalid S3 bucket name {bucket!r}: expected 3-63 lowercase letters, digits, '.' or '-'"
            )
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket, self.prefix = bucket, prefix
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.client = client if client is not None else make_client()
        if part_size is not None:
            plan_parts(0, part_size)  # refuses a part under S3's minimum
        self.part_size = part_size if part_size is not None else part_size_setting()

    def __repr__(self) -> str:
        return f"S3Blobs({self.url!r}, endpoint={self.client.meta.endpoint_url!r})"

    def object_key(self, key: str) -> str:
        """The bucket key that holds blob ``key``."""
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` unless it exists (True if this call wrote it): one conditional PutObject."""
        return self._put_object(key, lambda: data)

    def put_file(self, key: str, path: str | os.PathLike, *, progress: Progress | None = None) -> bool:
        """Store the file at ``path`` under ``key`` unless it exists (True if this call wrote it).

        Up to one part: one conditional PutObject streamed from the file. Larger: a multipart
        upload that resumes an interrupted one of the same key and is completed create-only.
        """
        size = os.path.getsize(path)
        if size <= self.part_size:
            with open(path, "rb") as handle:
                created = self._put_object(key, lambda: _rewound(handle))
            if progress is not None:
                progress(size, size)
            return created
        okey = self.object_key(key)
        if self.exists(key):
            return False
        upload = MultipartPut(self.client, self.bucket, okey, part_size=self.part_size,
                              concurrency=UPLOAD_CONCURRENCY)
        try:
            return upload.run(path, progress)
        except (ClientError, BotoCoreError) as err:
            raise self._translate(err, "write", key) from err

    def _put_object(self, key: str, body) -> bool:
        okey = self.object_key(key)
        try:
            retry(lambda: self.client.put_object(Bucket=self.bucket, Key=okey, Body=body(), IfNoneMatch="*"),
                  attempts=4, when=_in_flight_elsewhere, wait=lambda attempt: 0.05 * 2**attempt)
            return True
        except ClientError as err:
            if _code(err) in _EXISTS:
                return False
            raise self._translate(err, "write", key) from err
        except BotoCoreError as err:
            raise self._translate(err, "write", key) from err

    def get(self, key: str) -> bytes:
        """Return the bytes under ``key``; BlobNotFoundError if absent."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            return response["Body"].read()
        except (ClientError, BotoCoreError) as err:
            raise self._translate(err, "read", key) from err

    def read_range(self, key: str, start: int = 0) -> Iterator[bytes]:
        """Yield the bytes under ``key`` from offset ``start`` on (a ranged GET), streamed in chunks."""
        okey = self.object_key(key)
        ranged = {"Range": f"bytes={start}-"} if start else {}
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=okey, **ranged)["Body"]
            with body:
                yield from body.iter_chunks(CHUNK)
        except ClientError as err:
            if start and _code(err) in _BAD_RANGE:  # start is the object's end: nothing left to send
                return
            raise self._translate(err, "read", key) from err
        except BotoCoreError as err:  # a connection dropped mid-body: the caller resumes from where it stopped
            raise self._translate(err, "read", key) from err

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
            return True
        except (ClientError, BotoCoreError) as err:
            error = self._translate(err, "check", key)
            if isinstance(error, BlobNotFoundError):
                return False
            raise error from err

    def modified(self, key: str) -> datetime:
        """When ``key`` was written (UTC, the server's LastModified); BlobNotFoundError if absent."""
        try:
            stamp = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))["LastModified"]
        except (ClientError, BotoCoreError) as err:
            raise self._translate(err, "check", key) from err
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)

    def delete(self, key: str) -> None:
        """Remove ``key``; S3 deletes are idempotent, so a missing key is fine."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except (ClientError, BotoCoreError) as err:
            raise self._translate(err, "delete", key) from err

    def presigned_get(self, key: str, expires_s: int = 60) -> str:
        """A URL that reads ``key`` without credentials for ``expires_s`` seconds (the registry server's downloads)."""
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket,
                                                  "Key": self.object_key(key)}, ExpiresIn=int(expires_s))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix`` (S3 lists in key order)."""
        validate_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"][len(base):]
        except (ClientError, BotoCoreError) as err:
            raise self._translate(err, "list", f"{prefix}*") from err

    def _translate(self, err: Exception, action: str, key: str) -> VopstoreError:
        """One clear vopstore error for a boto3 failure."""
        endpoint = self.client.meta.endpoint_url
        where = f"{self.url}/{key}"
        if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
            return PermissionDeniedError(
                f"no usable S3 credentials to {action} {where}: {err}; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or an AWS profile)"
            )
        if isinstance(err, BotoConnectionError):
            return StoreUnavailableError(
                f"cannot reach S3 endpoint {endpoint}: {_reason(err)}; check AWS_ENDPOINT_URL and that the "
                "server is running"
            )
        if not isinstance(err, ClientError):
            return StoreUnavailableError(f"S3 {action} of {where} at {endpoint} failed: {err}")
        code, message = _code(err), err.response.get("Error", {}).get("Message") or ""
        if code == "NoSuchBucket":
            return ConfigError(
                f"S3 bucket {self.bucket!r} does not exist at {endpoint}; create it or fix the store URL {self.url}"
            )
        if code in _DENIED:
            return PermissionDeniedError(
                f"S3 endpoint {endpoint} refused to {action} {where}: {code} {message}".rstrip(" .")
                + "; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
            )
        if code in _NOT_FOUND:
            return BlobNotFoundError(f"no blob {key} in {self.url}; push the version again or pull it")
        return StoreUnavailableError(f"S3 {action} of {where} at {endpoint} failed: {code} {message}".rstrip())


def _rewound(handle):
    """The file from its start again (a retried PUT sends the whole body once more)."""
    handle.seek(0)
    return handle


def _in_flight_elsewhere(err: Exception) -> bool:
    """AWS's 409 for a conditional write of a key another write of it has in flight: worth another try."""
    return isinstance(err, ClientError) and _code(err) in _CONFLICT


def _code(err: ClientError) -> str:
    error = err.response.get("Error", {})
    return str(error.get("Code") or err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _reason(err: Exception) -> str:
    # botocore wraps urllib3's error; its last line is the useful part ("Connection refused").
    text = str(getattr(err, "kwargs", {}).get("error", "") or err)
    return text.strip().splitlines()[-1][:200] if text.strip() else type(err).__name__
