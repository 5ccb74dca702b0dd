"""open_blobs: one way in, from a URL or a path, and no boto3 until an S3 store is opened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vopstore.blobs import open_blobs
from vopstore.blobs.local import LocalBlobs
from vopstore.errors import ConfigError, InvalidRefError


def test_plain_path_and_file_url_give_local_blobs(tmp_path, monkeypatch):
    assert open_blobs(str(tmp_path)).root == tmp_path
    assert open_blobs(tmp_path.as_uri()).root == tmp_path
    assert open_blobs(f"file://localhost{tmp_path}").root == tmp_path
    assert open_blobs("file:///srv/my%20blobs").root == Path("/srv/my blobs")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert open_blobs("~/blobs").root == tmp_path / "blobs"
    monkeypatch.chdir(tmp_path)
    backend = open_blobs("rel/blobs")
    assert isinstance(backend, LocalBlobs)
    assert backend.root == tmp_path / "rel/blobs"
    assert backend.url == (tmp_path / "rel/blobs").as_uri()


@pytest.mark.parametrize(
    "url",
    ["", "   ", "http://host/blobs", "gs://bucket/x", "file://otherhost/x", "file:///x?y=1", "s3://", "s3:bucket",
     "s3://bucket/p?x=1", "s3://Bad_Bucket/x", "s3://ab"],
)
def test_unsupported_urls_are_config_errors(url):
    with pytest.raises(ConfigError) as info:
        open_blobs(url)
    assert isinstance(info.value, ValueError)


def test_s3_prefix_is_guarded():
    with pytest.raises(InvalidRefError):
        open_blobs("s3://bucket/../other")


@pytest.mark.s3
def test_s3_url_uses_the_standard_aws_configuration(s3_bucket, s3_env):
    backend = open_blobs(f"s3://{s3_bucket}/team/blobs/")
    assert (backend.bucket, backend.prefix, backend.url) == (s3_bucket, "team/blobs", f"s3://{s3_bucket}/team/blobs")
    assert backend.client.meta.endpoint_url == s3_env.endpoint_url
    assert backend.client.meta.config.s3["addressing_style"] == "path"
    assert backend.put("acme/k", b"v") is True
    listed = s3_env.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["team/blobs/acme/k"]


def test_importing_blobs_does_not_import_boto3_or_torch(tmp_path):
    code = (
        "import sys; from vopstore.blobs import open_blobs; "
        f"open_blobs({str(tmp_path)!r}).put('a/b', b'x'); "
        "bad = [m for m in ('boto3', 'botocore', 'torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
