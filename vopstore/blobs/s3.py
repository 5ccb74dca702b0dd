"""A blob backend on any S3-compatible store (AWS, MinIO, SeaweedFS, moto), through boto3.

The endpoint, credentials and region come from boto3's standard configuration
(``AWS_ENDPOINT_URL[_S3]``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``~/.aws/config``), so one store URL works everywhere.
Create-only puts use a conditional write (``If-None-Match: *``).
"""

from __future__ import annotations

import os
import re
import time
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

    def __init__(self, bucket: str, prefix: str = "", client: Any = None):
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

    def __repr__(self) -> str:
        return f"S3Blobs({self.url!r}, endpoint={self.client.meta.endpoint_url!r})"

    def object_key(self, key: str) -> str:
        """The bucket key that holds blob ``key``."""
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` unless it exists (True if this call wrote it).

        One conditional PutObject: boto3's managed (multipart) upload cannot pass
        If-None-Match, and a single PUT takes objects up to 5 GB.
        """
        okey = self.object_key(key)
        for attempt in range(4):
            try:
                self.client.put_object(Bucket=self.bucket, Key=okey, Body=data, IfNoneMatch="*")
                return True
            except ClientError as err:
                code = _code(err)
                if code in _EXISTS:
                    return False
                if code not in _CONFLICT or attempt == 3:
                    raise self._translate(err, "write", key) from err
                time.sleep(0.05 * 2**attempt)
            except BotoCoreError as err:
                raise self._translate(err, "write", key) from err
        raise AssertionError("unreachable")

    def get(self, key: str) -> bytes:
        """Return the bytes under ``key``; BlobNotFoundError if absent."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            return response["Body"].read()
        except (ClientError, BotoCoreError) as err:
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


def _code(err: ClientError) -> str:
    error = err.response.get("Error", {})
    return str(error.get("Code") or err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _reason(err: Exception) -> str:
    # botocore wraps urllib3's error; its last line is the useful part ("Connection refused").
    text = str(getattr(err, "kwargs", {}).get("error", "") or err)
    return text.strip().splitlines()[-1][:200] if text.strip() else type(err).__name__
