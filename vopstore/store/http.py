"""The HTTP registry: the registry server's client, a :class:`~vopstore.store.registry.Registry` like the direct one.

It holds a token, never database or bucket credentials. Idempotent calls are
retried with backoff on connection errors, timeouts, 5xx and 429, then surface
as one-line :class:`StoreUnavailableError` naming the URL. Problem documents
map back onto the :mod:`vopstore.errors` classes by their ``code``. Downloaded
bytes are verified against the digest the registry recorded, whether they came
through the server or from a presigned S3 URL. Blobs stream both ways: uploads
from a file, downloads into ``{file}.part`` that a later call resumes with a
``Range`` request (served by the registry or by S3 behind a presigned URL).
A blob over one upload chunk (16 MiB) goes up as a resumable upload: a later
call, or the same one after a dropped connection, sends only what the server lacks.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import quote

import httpx

from vopstore import __version__
from vopstore.blobs.transfer import CHUNK, BlobFile, Progress, RangeIgnored, download_verified, iter_file
from vopstore.checkpoint import read_checkpoint
from vopstore.errors import (AuthenticationError, BlobIntegrityError, ConfigError, NotFoundError,
                             RateLimitedError, StoreUnavailableError, VopstoreError, error_for_code)
from vopstore.refs import parse_ref, parse_task
from vopstore.store.cache import BlobCache
from vopstore.store.info import TaskInfo, VersionInfo
from vopstore.store.payload import Payload, digest_of, size_of

RETRIED_STATUS = {429, 502, 503, 504}
MAX_RETRY_WAIT_S = 10.0
DEFAULT_UPLOAD_CHUNK = 16 << 20  # blobs larger than one chunk go up as a resumable upload, a chunk per request


class HttpRegistry:
    """A registry server at ``url``, reached with ``token`` (default: ``$VOPSTORE_TOKEN``).

    Args:
        url: ``https://host[:port]`` (``http://`` for loopback or behind a trusted network).
        token: an API token; its tenant is this registry's scope.
        tenant: if given, must be the token's tenant.
        cache: the local cache that :meth:`fetch` fills (default: ``$VOPSTORE_HOME/cache``).
        timeout_s: per-request timeout; retries: attempts for idempotent calls (``$VOPSTORE_HTTP_RETRIES``),
            and for each stretch of a resumable upload that makes no progress.
        upload_chunk: bytes per request of a resumable upload (``$VOPSTORE_UPLOAD_CHUNK_SIZE``, default 16 MiB);
            smaller blobs go up in one request.
    """

    def __init__(self, url: str, token: str | None = None, *, tenant: str | None = None,
                 cache: BlobCache | None = None, timeout_s: float = 30.0, retries: int | None = None,
                 transport: httpx.BaseTransport | None = None, upload_chunk: int | None = None) -> None:
        self.url = url.rstrip("/")
        token = token or os.environ.get("VOPSTORE_TOKEN")
        if not token:
            raise ConfigError(f"{self.url} needs a token: set VOPSTORE_TOKEN, or 'vopstore remote add NAME {self.url} "
                              "--token -' and paste it")
        if not all("!" <= ch <= "~" for ch in token):
            raise ConfigError(f"the token for {self.url} has spaces or non-ASCII characters; copy it again")
        self._wanted_tenant, self._identity = tenant, None
        self.cache = cache or BlobCache()
        self.retries = retries if retries is not None else int(os.environ.get("VOPSTORE_HTTP_RETRIES", "4"))
        self.upload_chunk = upload_chunk if upload_chunk is not None else upload_chunk_size()
        if self.upload_chunk < 1:
            raise ConfigError(f"upload_chunk must be a positive number of bytes, got {self.upload_chunk}")
        self._http = httpx.Client(base_url=f"{self.url}/v1", timeout=timeout_s, follow_redirects=True,
                                  transport=transport, headers={"Authorization": f"Bearer {token}",
                                                                "User-Agent": f"vopstore/{__version__}"})

    def __repr__(self) -> str:
        return f"HttpRegistry({self.url!r})"

    # -- identity (asked once, lazily, so an offline runtime can still be built) ----------------------

    @property
    def identity(self) -> dict:
        if self._identity is None:
            who = self._call("GET", "/whoami")
            if self._wanted_tenant is not None and who["tenant"] != self._wanted_tenant:
                raise ConfigError(f"the token belongs to tenant {who['tenant']!r}, not {self._wanted_tenant!r}")
            self._identity = who
        return self._identity

    @property
    def tenant(self) -> str:
        return self.identity["tenant"]

    @property
    def default_tenant(self) -> str:
        return self.tenant

    # -- reads ------------------------------------------------------------------------------------

    def resolve(self, ref: str) -> VersionInfo:
        parsed = parse_ref(ref, self.default_tenant)
        selector = f"v{parsed.version}" if parsed.version else parsed.alias or "latest"
        return _version(self._call("GET", f"{_task_path(parsed)}/versions/{_q(selector)}"))

    def list_versions(self, task: str) -> list[VersionInfo]:
        parsed = parse_task(task, self.default_tenant)
        return [_version(v) for v in self._call("GET", f"{_task_path(parsed)}/versions")]

    def list_tasks(self) -> list[TaskInfo]:
        rows = self._call("GET", f"/tenants/{_q(self.tenant)}/tasks")
        return [TaskInfo(tenant=t["tenant"], name=t["name"], versions=t["versions"], latest=t["latest"],
                         aliases=t["aliases"]) for t in rows]

    def read_blob(self, info: VersionInfo) -> bytes:
        """The version's bytes (through the server or a presigned URL), verified against ``info.digest``."""
        with tempfile.TemporaryDirectory(prefix="vopstore-blob-") as folder:
            return self._download(info, Path(folder) / info.digest).path.read_bytes()

    def fetch(self, ref_or_info: str | VersionInfo, *, progress: Progress | None = None) -> Path:
        """A verified copy of the version's file in the local cache; an interrupted download resumes."""
        info = ref_or_info if isinstance(ref_or_info, VersionInfo) else self.resolve(ref_or_info)
        return (self.cache.get(info.digest, info.tenant)
                or self._download(info, self.cache.path(info.digest, info.tenant), progress).path)

    @contextmanager
    def open_blob(self, info: VersionInfo, *, progress: Progress | None = None) -> Iterator[BlobFile]:
        """A verified local file of the version for a ``with`` block: its copy in the local cache."""
        yield BlobFile(self.fetch(info, progress=progress), info.digest, info.size)

    def log(self, task: str | None = None, limit: int | None = None) -> list[dict]:
        params = {"limit": limit} if limit else None
        if task is None:
            return self._call("GET", f"/tenants/{_q(self.tenant)}/log", params=params)
        return self._call("GET", f"{_task_path(parse_task(task, self.default_tenant))}/log", params=params)

    def verify(self, ref: str | None = None) -> list[str]:
        return self._call("POST", f"/tenants/{_q(self.tenant)}/verify", json={"ref": ref})["problems"]

    # -- writes -----------------------------------------------------------------------------------

    def add(self, task: str, path: str | os.PathLike, *, metrics: dict | None = None, message: str | None = None,
            training_config: dict | None = None, parent: str | None = None) -> VersionInfo:
        from vopstore.store.direct import current_user, json_object  # SQLAlchemy: a client mostly reads

        json_object(metrics, "metrics"), json_object(training_config, "training_config")  # before any I/O
        parsed = parse_task(task, self.default_tenant)
        data, _, _ = read_checkpoint(path, contents=True)  # refused here, before any upload
        digest = self._upload(parsed.tenant, data)
        body = {"digest": digest, "metrics": metrics, "message": message, "training_config": training_config,
                "parent": parent, "created_by": current_user()}
        return _version(self._call("POST", f"{_task_path(parsed)}/versions", json=body)["version"])

    def import_version(self, info: VersionInfo, data: Payload, aliases: tuple[str, ...] = (), *,
                       progress: Progress | None = None) -> tuple[VersionInfo, bool]:
        if digest_of(data) != info.digest:
            raise BlobIntegrityError(f"{info.ref}: bytes do not match digest {info.digest[:12]}...; the source is corrupt")
        self._upload(info.tenant, data, progress)
        body = {"digest": info.digest, "number": info.number, "metrics": info.metrics, "message": info.message,
                "training_config": info.training_config, "parent": info.parent, "created_by": info.created_by,
                "created_at": info.created_at.isoformat() if info.created_at else None, "aliases": list(aliases)}
        path = f"/tenants/{_q(info.tenant)}/tasks/{_q(info.task)}/versions"
        out = self._call("POST", path, json=body)
        return _version(out["version"]), out["created"]

    def tag(self, ref: str, alias: str, *, expected_digest: str | None = None) -> VersionInfo:
        parsed = parse_ref(ref, self.default_tenant)
        target = f"v{parsed.version}" if parsed.version else parsed.alias or "latest"
        body = {"target": target, "expected_digest": expected_digest}
        return _version(self._call("PUT", f"{_task_path(parsed)}/aliases/{_q(alias)}", json=body))

    def untag(self, task: str, alias: str) -> None:
        self._call("DELETE", f"{_task_path(parse_task(task, self.default_tenant))}/aliases/{_q(alias)}", retry=False)

    def remove(self, ref: str, force: bool = False) -> VersionInfo:
        parsed = parse_ref(ref, self.default_tenant)
        selector = f"v{parsed.version}" if parsed.version else parsed.alias or "latest"
        return _version(self._call("DELETE", f"{_task_path(parsed)}/versions/{_q(selector)}",
                                   params={"force": str(bool(force)).lower()}, retry=False))

    def gc(self, grace_s: float = 3600.0, dry_run: bool = False, force: bool = False) -> int:
        from vopstore.store.maintenance import _cutoff  # SQLAlchemy, as above

        _cutoff(grace_s)  # the same one-line error for nan, inf or a negative grace as a direct store
        body = {"grace_s": grace_s, "dry_run": dry_run, "force": force}
        return self._call("POST", f"/tenants/{_q(self.tenant)}/gc", json=body, retry=False)["removed"]

    # -- tokens of this tenant (admin scope) ------------------------------------------------------

    def create_token(self, tenant: str, name: str = "default", scope: str = "write",
                     expires_in_s: float | None = None) -> str:
        body = {"name": name, "scope": scope, "expires": f"{int(expires_in_s)}s" if expires_in_s else None}
        return self._call("POST", f"/tenants/{_q(tenant)}/tokens", json=body, retry=False)["token"]

    def list_tokens(self, tenant: str) -> list[dict]:
        return self._call("GET", f"/tenants/{_q(tenant)}/tokens")

    def revoke_token(self, tenant: str, name: str) -> int:
        self._call("DELETE", f"/tenants/{_q(tenant)}/tokens/{_q(name)}", retry=False)
        return 1

    def close(self) -> None:
        self._http.close()

    # -- plumbing ---------------------------------------------------------------------------------

    def _upload(self, tenant: str, data: Payload, progress: Progress | None = None) -> str:
        """PUT the blob (a file is streamed, never read whole), or send a big one resumably; return its digest."""
        digest = digest_of(data)
        if size_of(data) > self.upload_chunk and self._upload_resumable(tenant, digest, data, progress):
            return digest
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(data, BlobFile):
            headers["Content-Length"] = str(data.size)  # the server refuses an upload over its limit before reading it
            body = lambda: iter_file(data.path, progress=progress)  # noqa: E731 - a fresh stream per attempt
        else:
            body = lambda: data  # noqa: E731
        self._call("PUT", f"/tenants/{_q(tenant)}/blobs/{digest}", body=body, headers=headers)
        return digest

    def _upload_resumable(self, tenant: str, digest: str, data: Payload, progress: Progress | None) -> bool:
        """Send the blob a chunk per PATCH, from where the server stands: a rerun sends only the missing bytes.

        After a dropped connection (or a 409, 404 or 5xx) the server is asked how many bytes it holds
        and the upload goes on from there; ``retries`` failures in a row without progress give up.
        False (nothing sent) when the server predates resumable uploads: the caller PUTs the blob whole.
        """
        path, total = f"/tenants/{_q(tenant)}/blobs/{digest}/upload", size_of(data)
        offset, complete = self._upload_state(path)
        resumed, failures = offset > 0 and not complete, 0
        if progress is not None:
            progress(offset, total)  # what an earlier, interrupted call already sent
        while not complete:
            end = min(total, offset + self.upload_chunk)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(end - offset),
                       "Upload-Offset": str(offset), "Upload-Length": str(total)}
            try:
                response = self._http.request("PATCH", path, headers=headers,
                                              content=_byte_range(data, offset, end, total, progress))
            except httpx.HTTPError as exc:
                response, problem = None, StoreUnavailableError(
                    f"{self.url}: the upload broke off ({type(exc).__name__}: {_first_line(exc)}); run the command "
                    "again to resume it")
            if response is not None and response.status_code < 400:
                state = response.json()
                offset, complete, failures = state["offset"], state["complete"], 0
                continue
            if response is not None and response.status_code in (404, 405) and offset == 0:
                return False  # a server without resumable uploads (or a path it refuses): its PUT says which
            if response is not None:
                problem = _error(response, self.url)
                if isinstance(problem, BlobIntegrityError) and resumed:  # bytes another call left were damaged
                    offset, resumed = 0, False  # the server dropped them: one clean try from the start
                    continue
                if response.status_code not in {404, 409, *RETRIED_STATUS}:
                    raise problem
            failures += 1
            if failures >= max(1, self.retries):
                raise problem
            if response is None or response.status_code != 409:
                wait = getattr(problem, "retry_after", None) or 0.2 * 2 ** failures * random.uniform(0.5, 1.5)
                time.sleep(min(MAX_RETRY_WAIT_S, wait))
            before = offset
            offset, complete = self._upload_state(path)
            if offset > before:  # the server kept part of the chunk: progress, not a failure
                failures = 0
        return True

    def _upload_state(self, path: str) -> tuple[int, bool]:
        """(bytes the server holds, whether the upload is complete): (0, False) when none is under way."""
        try:
            state = self._call("GET", path)
        except NotFoundError:
            return 0, False
        return state["offset"], state["complete"]

    def _download(self, info: VersionInfo, dest: Path, progress: Progress | None = None) -> BlobFile:
        path = f"/tenants/{_q(info.tenant)}/tasks/{_q(info.task)}/versions/v{info.number}/blob"
        try:
            return download_verified(lambda start: self._stream(path, start), info.digest, dest, size=info.size,
                                     progress=progress, where=self.url)
        except BlobIntegrityError as exc:
            raise BlobIntegrityError(f"{info.ref}: {exc} (a damaged transfer or store)") from None

    def _stream(self, path: str, start: int) -> Iterator[bytes]:
        """The blob's bytes from ``start`` on: a ranged GET (followed to a presigned URL when the server redirects)."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        try:
            with self._http.stream("GET", path, headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response, self.url)
                if start and response.status_code != 206:
                    raise RangeIgnored()
                yield from response.iter_bytes(CHUNK)
        except httpx.HTTPError as exc:
            raise StoreUnavailableError(f"{self.url}: the download broke off ({type(exc).__name__}: "
                                        f"{_first_line(exc)}); run the command again to resume it") from exc

    def _call(self, method: str, path: str, *, retry: bool = True,
              body: Callable[[], bytes | Iterable[bytes]] | None = None, **kwargs):
        """One API call; retried (when ``retry``) on transport errors, 429 and 502-504; errors mapped back.

        ``body`` makes the request body, once per attempt (a streamed body cannot be sent twice).
        """
        attempts = max(1, self.retries) if retry else 1
        for attempt in range(attempts):
            try:
                if body is not None:
                    kwargs["content"] = body()
                response = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                problem = StoreUnavailableError(f"{self.url} is unreachable ({type(exc).__name__}: "
                                                f"{_first_line(exc)}); check that the registry is running")
                wait = None
            else:
                if response.status_code < 400:
                    return response.json() if response.content else None
                problem = _error(response, self.url)
                if response.status_code not in RETRIED_STATUS:
                    raise problem
                wait = getattr(problem, "retry_after", None)
            if attempt < attempts - 1:
                time.sleep(min(MAX_RETRY_WAIT_S, wait if wait else 0.2 * 2 ** attempt * random.uniform(0.5, 1.5)))
        raise problem


def _error(response: httpx.Response, url: str) -> VopstoreError:
    """The vopstore error a problem document stands for (or a StoreUnavailableError for anything else)."""
    try:
        body = response.json()
        code, detail = body["code"], body["detail"]
    except (ValueError, KeyError, TypeError):
        return StoreUnavailableError(f"{url} answered HTTP {response.status_code} without a problem document; "
                                     "is this a vopstore registry?")
    cls = error_for_code(code)
    if cls is RateLimitedError:
        return RateLimitedError(detail, retry_after=float(response.headers.get("Retry-After", "1")))
    if response.status_code >= 500 and not issubclass(cls, StoreUnavailableError):
        return StoreUnavailableError(f"{url}: {detail}")
    error = cls(detail)
    if isinstance(error, AuthenticationError):
        return AuthenticationError(f"{url}: {detail}")
    return error


def upload_chunk_size() -> int:
    """Bytes per request of a resumable upload: ``$VOPSTORE_UPLOAD_CHUNK_SIZE``, else 16 MiB."""
    raw = os.environ.get("VOPSTORE_UPLOAD_CHUNK_SIZE")
    if raw is None:
        return DEFAULT_UPLOAD_CHUNK
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"VOPSTORE_UPLOAD_CHUNK_SIZE must be a positive number of bytes, got {raw!r}; "
                          "e.g. 16777216 (16 MiB)")
    return int(raw)


def _byte_range(data: Payload, start: int, end: int, total: int, progress: Progress | None) -> Iterator[bytes]:
    """Bytes ``start:end`` of the payload, a piece at a time (a file is read, never held whole)."""
    done = start
    handle = open(data.path, "rb") if isinstance(data, BlobFile) else None
    try:
        if handle is not None:
            handle.seek(start)
        while done < end:
            piece = handle.read(min(CHUNK, end - done)) if handle is not None else data[done:min(end, done + CHUNK)]
            if not piece:  # the file shrank since it was hashed: the server refuses the short body
                return
            done += len(piece)
            if progress is not None:
                progress(done, total)
            yield piece
    finally:
        if handle is not None:
            handle.close()


def _version(d: dict) -> VersionInfo:
    created = datetime.fromisoformat(d["created_at"]) if d.get("created_at") else None
    return VersionInfo(tenant=d["tenant"], task=d["task"], number=d["number"], digest=d["digest"], size=d["size"],
                       method=d["method"], params=d["params"], backbone_name=d["backbone_name"],
                       backbone_fingerprint=d["backbone_fingerprint"], metrics=d.get("metrics"),
                       training_config=d.get("training_config"), message=d.get("message"), created_at=created,
                       created_by=d.get("created_by"), aliases=tuple(d.get("aliases") or ()),
                       method_config=d.get("method_config") or {}, dtype=d.get("dtype", "float32"),
                       parent=d.get("parent"))


def _task_path(ref) -> str:
    return f"/tenants/{_q(ref.tenant)}/tasks/{_q(ref.task)}"


def _q(part: str) -> str:
    return quote(part, safe="")


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or "no detail"
