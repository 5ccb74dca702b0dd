"""S3 failure modes map to clear vopstore errors, quickly: unreachable endpoint, bad or missing credentials."""

from __future__ import annotations

import time

import pytest

from vopstore.blobs import open_blobs
from vopstore.errors import ConfigError, PermissionDeniedError, StoreUnavailableError

pytestmark = pytest.mark.s3


def _every_operation(backend):
    yield lambda: backend.put("acme/k", b"x")
    yield lambda: backend.get("acme/k")
    yield lambda: backend.exists("acme/k")
    yield lambda: list(backend.list("acme/"))


def test_unreachable_endpoint_fails_fast(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    backend = open_blobs("s3://bucket/prefix")
    for operation in _every_operation(backend):
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError, match=r"cannot reach S3 endpoint http://127.0.0.1:1: .*AWS_ENDPOINT_URL"):
            operation()
        assert time.monotonic() - start < 5
    assert isinstance(StoreUnavailableError("x"), ConnectionError)


def test_missing_bucket_is_a_config_error(s3_env):
    backend = open_blobs("s3://no-such-bucket-here")
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket-here' does not exist"):
        backend.get("acme/k")
    with pytest.raises(ConfigError, match="does not exist"):
        backend.put("acme/k", b"x")


def test_no_credentials_is_permission_denied(s3_env, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    backend = open_blobs("s3://any-bucket")
    with pytest.raises(PermissionDeniedError, match="no usable S3 credentials.*AWS_ACCESS_KEY_ID"):
        backend.get("acme/k")


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_wrong_credentials_on_seaweedfs_are_refused(seaweed_server, monkeypatch, wrong):
    bucket = seaweed_server.create_bucket()
    seaweed_server.client().put_object(Bucket=bucket, Key="acme/k", Body=b"x")
    for var, value in seaweed_server.env().items():
        monkeypatch.setenv(var, value)
    if wrong == "secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    backend = open_blobs(f"s3://{bucket}")
    for operation in _every_operation(backend):
        with pytest.raises(PermissionDeniedError, match="refused to .*AWS_ACCESS_KEY_ID") as info:
            operation()
        assert "\n" not in str(info.value)
    assert seaweed_server.client().get_object(Bucket=bucket, Key="acme/k")["Body"].read() == b"x"


class _ConflictingS3:
    """A client whose conditional PutObject answers the given error codes in turn, then succeeds."""

    class meta:
        endpoint_url = "http://stub"

    def __init__(self, *codes: str):
        self.codes, self.calls = list(codes), 0

    def put_object(self, **kwargs):
        from botocore.exceptions import ClientError

        self.calls += 1
        assert kwargs["IfNoneMatch"] == "*"
        if self.codes:
            raise ClientError({"Error": {"Code": self.codes.pop(0), "Message": "stub"}}, "PutObject")
        return {}


def test_a_put_racing_another_write_of_the_key_is_tried_again(monkeypatch):
    from vopstore import core
    from vopstore.blobs.s3 import S3Blobs

    monkeypatch.setattr(core.time, "sleep", lambda seconds: None)
    racing = _ConflictingS3("ConditionalRequestConflict", "409")
    assert S3Blobs("bucket", client=racing).put("acme/k", b"x") is True and racing.calls == 3
    exists = _ConflictingS3("ConditionalRequestConflict", "PreconditionFailed")
    assert S3Blobs("bucket", client=exists).put("acme/k", b"x") is False and exists.calls == 2
    stuck = _ConflictingS3(*["409"] * 4)
    with pytest.raises(StoreUnavailableError):
        S3Blobs("bucket", client=stuck).put("acme/k", b"x")
    assert stuck.calls == 4
