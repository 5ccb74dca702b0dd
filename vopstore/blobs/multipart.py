"""Big puts to S3: a create-only multipart upload that resumes where an interrupted one stopped.

boto3's managed transfer (``upload_file``/``TransferConfig``) cannot make the final step
conditional and always starts from scratch, so the upload is driven here:

1. a pending upload of the same key (left by an interrupted put) is adopted, else one is created;
2. each part is sent unless the pending upload already holds it with the same size and MD5
   (S3's ETag of a plain part): an interrupted put resumes with the parts still missing;
3. ``CompleteMultipartUpload`` carries ``If-None-Match: *``: when the key was created meanwhile,
   the upload is aborted and the put reports that it wrote nothing, exactly like a single PUT.

Parts are read with ``os.pread`` a few at a time, so memory stays at about
``concurrency x part_size`` whatever the file's size.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from vopstore.blobs.transfer import Progress
from vopstore.errors import ConfigError

MIN_PART = 5 << 20  # S3's smallest part (all but the last)
MAX_PARTS = 10_000  # S3's most parts per upload
_GONE = {"NoSuchUpload", "404"}


@dataclass(frozen=True)
class Part:
    number: int
    offset: int
    length: int


def plan_parts(size: int, part_size: int) -> list[Part]:
    """The parts of a ``size``-byte file: ``part_size`` each (grown to fit in 10,000 parts), the last shorter."""
    if part_size < MIN_PART:
        raise ConfigError(f"S3 part size {part_size} is below S3's minimum of {MIN_PART} bytes (5 MiB)")
    part_size = max(part_size, -(-size // MAX_PARTS))
    count = max(1, -(-size // part_size))
    return [Part(n + 1, n * part_size, min(part_size, size - n * part_size)) for n in range(count)]


class MultipartPut:
    """One create-only, resumable multipart upload of a local file to ``bucket/okey``."""

    def __init__(self, client: Any, bucket: str, okey: str, *, part_size: int, concurrency: int) -> None:
        self.client, self.bucket, self.okey = client, bucket, okey
        self.part_size, self.concurrency = part_size, max(1, concurrency)
        self._lock, self._done, self._total = threading.Lock(), 0, 0
        self.reused = 0  # parts found already uploaded (what a resumed put skipped)

    def run(self, path: str | os.PathLike, progress: Progress | None = None) -> bool:
        """Upload the file; True if this call created the object, False if the key existed."""
        size = os.path.getsize(path)
        self._total, self._progress = size, progress
        upload_id = self._pending() or self.client.create_multipart_upload(Bucket=self.bucket,
                                                                          Key=self.okey)["UploadId"]
        held = self._held_parts(upload_id)
        fd = os.open(path, os.O_RDONLY)
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="vopstore-part") as pool:
                etags = list(pool.map(lambda part: self._send(fd, upload_id, part, held.get(part.number)),
                                      plan_parts(size, self.part_size)))
        finally:
            os.close(fd)
        return self._complete(upload_id, etags)

    def _pending(self) -> str | None:
        """The newest upload of this key that was started and neither completed nor aborted."""
        found = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.okey)
        for page in pages:
            found += [u for u in page.get("Uploads", ()) if u["Key"] == self.okey]
        return max(found, key=lambda u: u["Initiated"])["UploadId"] if found else None

    def _held_parts(self, upload_id: str) -> dict[int, tuple[int, str]]:
        """{part number: (size, ETag)} of the parts the upload already holds."""
        held = {}
        pages = self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=self.okey, UploadId=upload_id)
        for page in pages:
            for part in page.get("Parts", ()):
                held[part["PartNumber"]] = (part["Size"], part["ETag"].strip('"'))
        return held

    def _send(self, fd: int, upload_id: str, part: Part, held: tuple[int, str] | None) -> str:
        data = os.pread(fd, part.length, part.offset)
        if held is not None and held == (part.length, hashlib.md5(data, usedforsecurity=False).hexdigest()):
            etag = held[1]
            with self._lock:
                self.reused += 1
        else:
            etag = self.client.upload_part(Bucket=self.bucket, Key=self.okey, UploadId=upload_id,
                                           PartNumber=part.number, Body=data)["ETag"].strip('"')
        with self._lock:
            self._done += part.length
            if self._progress is not None:
                self._progress(self._done, self._total)
        return etag

    def _complete(self, upload_id: str, etags: list[str]) -> bool:
        parts = [{"PartNumber": n, "ETag": f'"{etag}"'} for n, etag in enumerate(etags, start=1)]
        try:
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.okey, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts}, IfNoneMatch="*")
            return True
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code") or "")
            if code not in {"PreconditionFailed", "412", *_GONE} or (code in _GONE and not self._exists()):
                raise
        # The key was created meanwhile (a concurrent put of the same bytes, or one that completed this very upload).
        self._abort(upload_id)
        return False

    def _exists(self) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.okey)
            return True
        except ClientError:
            return False

    def _abort(self, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.okey, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            pass  # already gone; a bucket lifecycle rule collects any upload left behind
