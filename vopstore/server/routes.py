"""The ``/v1`` routes. Each names the scope it needs; each reaches only the caller's tenant.

A path under another tenant answers exactly as a missing one would (the same
404 whether or not that tenant or task exists), so a token learns nothing
about other tenants. Handlers are thin: the scoped registry does the work.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from datetime import datetime
from typing import Optional

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, StreamingResponse

from vopstore.blobs.base import blob_key, open_blob_file
from vopstore.core import validate_digest
from vopstore.errors import ConfigError, NotFoundError, QuotaExceededError
from vopstore.refs import Ref, parse_ref, parse_task, validate_alias, validate_name
from vopstore.server import schemas as s
from vopstore.server.app import PROBLEM_TYPE, needs, problem, state
from vopstore.server.streams import blob_body, range_start, spool
from vopstore.server.uploads import OffsetMismatch, append_chunk, check_room
from vopstore.store.direct import json_object
from vopstore.store.info import VersionInfo
from vopstore.store.sql import task_not_found
from vopstore.store.tenants import TokenIdentity, parse_duration

_PROBLEM = {"model": s.Problem, "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
PROBLEMS = {code: {**_PROBLEM, "description": text} for code, text in {
    401: "no token, or a malformed, unknown, expired or revoked one", 403: "the token lacks the scope",
    404: "no such tenant, task, version, alias or blob (also: another tenant's)", 409: "conflict",
    413: "upload over the size limit or the tenant's quota", 422: "invalid input", 429: "rate limited",
    503: "database or blob store unavailable"}.items()}
router = APIRouter(responses=PROBLEMS)

reader, writer, admin = needs("read"), needs("write"), needs("admin")


def _own_tenant(who: TokenIdentity, tenant: str) -> str:
    validate_name(tenant, "tenant")
    if tenant != who.tenant:
        raise NotFoundError(f"no tenant {tenant!r} here; your token reaches tenant {who.tenant!r}")
    return tenant


def _own(who: TokenIdentity, request: Request, tenant: str, task: str, selector: str | None = None) -> Ref:
    """The ref, validated, if it is in the caller's tenant; else the very 404 a missing task gets."""
    text = f"{tenant}/{task}" + (f"@{selector}" if selector is not None else "")
    ref = parse_ref(text) if selector is not None else parse_task(text)
    if ref.tenant != who.tenant:
        raise task_not_found(ref, state(request).registry.url)
    return ref


def _out(info: VersionInfo) -> dict:
    return info.to_dict()


@router.get("/whoami", response_model=s.WhoAmI, tags=["tokens"])
def whoami(who: TokenIdentity = Depends(reader)):
    """The tenant, name and scope of the calling token."""
    return {"tenant": who.tenant, "token": who.name, "scope": who.scope}


@router.get("/tenants/{tenant}/tasks", response_model=list[s.TaskOut], tags=["read"])
def list_tasks(tenant: str, request: Request, who: TokenIdentity = Depends(reader)):
    """Every task of the tenant, with its version count, latest number and aliases."""
    _own_tenant(who, tenant)
    return [t.to_dict() for t in state(request).scoped(who).list_tasks()]


@router.get("/tenants/{tenant}/tasks/{task}/versions", response_model=list[s.VersionOut], tags=["read"])
def list_versions(tenant: str, task: str, request: Request, who: TokenIdentity = Depends(reader)):
    """Every version of a task, oldest first."""
    ref = _own(who, request, tenant, task)
    return [_out(v) for v in state(request).scoped(who).list_versions(str(ref))]


@router.get("/tenants/{tenant}/tasks/{task}/versions/{selector}", response_model=s.VersionOut, tags=["read"])
def resolve(tenant: str, task: str, selector: str, request: Request, who: TokenIdentity = Depends(reader)):
    """The version ``selector`` names: ``vN``, an alias, or ``latest``."""
    ref = _own(who, request, tenant, task, selector)
    return _out(state(request).scoped(who).resolve(str(ref)))


@router.get("/tenants/{tenant}/tasks/{task}/versions/{selector}/blob", tags=["read"],
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the checkpoint file"},
                       206: {"description": "the file from the offset a 'Range: bytes=N-' header asks for"},
                       307: {"description": "a short-lived presigned URL of the file"},
                       416: {"description": "the range starts at or after the file's end"}})
def download(tenant: str, task: str, selector: str, request: Request, who: TokenIdentity = Depends(reader)):
    """The version's checkpoint file, streamed and verified on the way out (or a presigned S3 URL to it).

    ``Range: bytes=N-`` resumes an interrupted download (206); the client verifies the whole file.
    """
    ref = _own(who, request, tenant, task, selector)
    shared = state(request)
    info = shared.scoped(who).resolve(str(ref))
    headers = {"X-Vopstore-Digest": info.digest, "ETag": f'"{info.digest}"', "Accept-Ranges": "bytes"}
    blobs, key = shared.registry.blobs, blob_key(info.tenant, info.digest)
    if shared.settings.presign and hasattr(blobs, "presigned_get"):
        return RedirectResponse(blobs.presigned_get(key, shared.settings.presign_ttl_s), status_code=307,
                                headers=headers)
    start = range_start(request.headers.get("range"))
    if start and start >= info.size:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{info.size}"})
    headers["Content-Length"] = str(info.size - start)
    if start:
        headers["Content-Range"] = f"bytes {start}-{info.size - 1}/{info.size}"
    return StreamingResponse(blob_body(blobs, key, info.digest, start), status_code=206 if start else 200,
                             media_type="application/octet-stream", headers=headers)


@router.put("/tenants/{tenant}/blobs/{digest}", status_code=201, response_model=s.Uploaded, tags=["write"],
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload(tenant: str, digest: str, request: Request, who: TokenIdentity = Depends(writer)):
    """Upload a checkpoint file: streamed to disk, size-bounded, hashed, validated; then staged for a version.

    Nothing is stored unless the whole body arrives, hashes to ``digest`` and is a valid prompt set.
    The body is never held in memory: a big version goes on to the blob store from the spooled file.
    """
    _own_tenant(who, tenant)
    validate_digest(digest)
    shared = state(request)
    limit = shared.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise QuotaExceededError(f"upload of {declared} bytes is over this registry's limit of {limit} bytes")
    async with shared.uploads:  # a bounded number in flight per worker
        with tempfile.TemporaryDirectory(prefix="vopstore-upload-") as folder:
            blob = await spool(request.stream(), digest, limit, folder)
            await run_in_threadpool(shared.scoped(who).upload, blob, tenant)
    return {"digest": digest, "size": blob.size}


_OFFSET_HEADER = {"Upload-Offset": {"description": "bytes the upload holds", "schema": {"type": "integer"}}}


@router.get("/tenants/{tenant}/blobs/{digest}/upload", response_model=s.UploadState, tags=["write"],
            responses={200: {"headers": _OFFSET_HEADER},
                       404: {**PROBLEMS[404], "description": "no upload of that digest under way (or another tenant)"}})
def upload_state(tenant: str, digest: str, request: Request, response: Response, who: TokenIdentity = Depends(writer)):
    """Where a resumable upload stands: the bytes the server holds (continue there), or complete."""
    _own_tenant(who, tenant)
    found = state(request).upload_folder.state(tenant, validate_digest(digest))
    if found is None:
        raise NotFoundError(f"no upload of {digest[:12]}... is under way; start one with PATCH at Upload-Offset 0")
    response.headers["Upload-Offset"] = str(found.offset)
    return {"digest": digest, "offset": found.offset, "complete": found.complete}


@router.patch("/tenants/{tenant}/blobs/{digest}/upload", response_model=s.UploadState, tags=["write"],
              responses={200: {"headers": _OFFSET_HEADER},
                         409: {**PROBLEMS[409], "headers": _OFFSET_HEADER,
                               "description": "Upload-Offset is not where the upload stands (that is in the "
                                              "Upload-Offset header), or another upload of the blob is appending"}},
              openapi_extra={"requestBody": {"content": {
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_chunk(tenant: str, digest: str, request: Request, response: Response,
                       upload_offset: Optional[int] = Header(None, ge=0, description="where this chunk starts "
                                                             "(required; 0 starts an upload)"),
                       upload_length: Optional[int] = Header(None, ge=1, description="the whole blob's size in bytes "
                                                             "(required)"),
                       who: TokenIdentity = Depends(writer)):
    """Append a chunk to a resumable upload; the chunk that completes it stages the blob like a whole-body PUT.

    A body cut short keeps the bytes that arrived: ask ``GET`` of this path where to continue.
    The whole is verified (sha256 ``digest``, a valid prompt set) before anything is staged.
    """
    _own_tenant(who, tenant)  # first: another tenant's path answers as a missing tenant's, whatever the headers
    validate_digest(digest)
    if upload_offset is None or upload_length is None:
        raise ConfigError("a chunk needs the headers Upload-Offset (0 to start) and Upload-Length (the blob's size)")
    shared = state(request)
    limit = shared.settings.max_upload_bytes
    if upload_length > limit:
        raise QuotaExceededError(f"upload of {upload_length} bytes is over this registry's limit of {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and upload_offset + int(declared) > upload_length:
        raise QuotaExceededError(f"a chunk of {declared} bytes at Upload-Offset {upload_offset} runs past "
                                 f"Upload-Length {upload_length}")
    registry = shared.scoped(who)
    if upload_offset == 0:  # the quota, before the first byte of a new upload is read
        await run_in_threadpool(check_room, registry, tenant, digest, upload_length)
    async with shared.uploads:
        try:
            found = await append_chunk(shared.upload_folder, tenant, digest, upload_offset, upload_length,
                                       request.stream(), lambda blob: registry.upload(blob, tenant))
        except OffsetMismatch as exc:
            return problem(409, exc.code, str(exc), {"Upload-Offset": str(exc.offset)})
    response.headers["Upload-Offset"] = str(found.offset)
    return {"digest": digest, "offset": found.offset, "complete": found.complete}


@router.post("/tenants/{tenant}/tasks/{task}/versions", response_model=s.VersionCreated, status_code=201,
             tags=["write"])
def create_version(tenant: str, task: str, body: s.VersionCreate, request: Request,
                   who: TokenIdentity = Depends(writer)):
    """Register an uploaded blob as a version: the next number (add) or ``number`` (a version pushed here)."""
    ref = _own(who, request, tenant, task)
    aliases = tuple(validate_alias(a) for a in body.aliases)
    registry = state(request).scoped(who)
    with ExitStack() as held:
        try:  # the staged blob, verified into a local file (a local store's own file, hashed in place)
            data = held.enter_context(open_blob_file(registry.blobs, ref.tenant, validate_digest(body.digest)))
        except NotFoundError:
            raise NotFoundError(f"no uploaded blob {body.digest[:12]}... in {registry.url}; PUT it to "
                                f"/v1/tenants/{tenant}/blobs/{body.digest} first") from None
        return _register(registry, ref, body, data, aliases)


def _register(registry, ref: Ref, body: s.VersionCreate, data, aliases: tuple[str, ...]) -> dict:
    """Add the blob as the next version, or import it under ``body.number`` (a version pushed here)."""
    if body.number is None:
        info, created = registry.add_bytes(str(ref), data, metrics=body.metrics, message=body.message,
                                           training_config=body.training_config, parent=body.parent,
                                           created_by=body.created_by)
        for alias in aliases:
            info = registry.tag(info.ref, alias)
        return {"version": _out(info), "created": created}
    incoming = VersionInfo(tenant=ref.tenant, task=ref.task, number=body.number, digest=body.digest, size=data.size,
                           method="", params=0, backbone_name="", backbone_fingerprint="",
                           metrics=json_object(body.metrics, "metrics"),
                           training_config=json_object(body.training_config, "training_config"),
                           message=body.message, created_at=_when(body.created_at), created_by=body.created_by,
                           parent=body.parent)
    info, created = registry.import_version(incoming, data, aliases)
    return {"version": _out(info), "created": created}


@router.delete("/tenants/{tenant}/tasks/{task}/versions/{selector}", response_model=s.VersionOut, tags=["admin"])
def remove(tenant: str, task: str, selector: str, request: Request, force: bool = Query(False),
           who: TokenIdentity = Depends(admin)):
    """Remove a version (refused while aliased unless ``force``); its blob goes at the next gc."""
    ref = _own(who, request, tenant, task, selector)
    return _out(state(request).scoped(who).remove(str(ref), force=force))


@router.put("/tenants/{tenant}/tasks/{task}/aliases/{alias}", response_model=s.VersionOut, tags=["write"])
def tag(tenant: str, task: str, alias: str, body: s.AliasPut, request: Request, who: TokenIdentity = Depends(writer)):
    """Point ``alias`` at the version ``target`` names; with ``expected_digest``, only if it still points there."""
    ref = _own(who, request, tenant, task, body.target)
    return _out(state(request).scoped(who).tag(str(ref), alias, expected_digest=body.expected_digest))


@router.delete("/tenants/{tenant}/tasks/{task}/aliases/{alias}", status_code=204, tags=["write"])
def untag(tenant: str, task: str, alias: str, request: Request, who: TokenIdentity = Depends(writer)):
    """Remove ``alias`` from the task."""
    ref = _own(who, request, tenant, task)
    state(request).scoped(who).untag(str(ref), alias)
    return Response(status_code=204)


@router.get("/tenants/{tenant}/tasks/{task}/log", response_model=list[s.AuditOut], tags=["read"])
def task_log(tenant: str, task: str, request: Request, limit: int | None = Query(None, ge=1, le=100_000),
             who: TokenIdentity = Depends(reader)):
    """The task's audit log, oldest first: adds, pushes, alias moves and removals, with who and when."""
    ref = _own(who, request, tenant, task)
    return state(request).scoped(who).log(str(ref), limit=limit)


@router.get("/tenants/{tenant}/log", response_model=list[s.AuditOut], tags=["admin"])
def tenant_log(tenant: str, request: Request, limit: int | None = Query(None, ge=1, le=100_000),
               who: TokenIdentity = Depends(admin)):
    """The whole tenant's audit log, token changes included."""
    _own_tenant(who, tenant)
    return state(request).scoped(who).log(None, limit=limit)


@router.post("/tenants/{tenant}/verify", response_model=s.VerifyOut, tags=["read"])
def verify(tenant: str, body: s.VerifyRequest, request: Request, who: TokenIdentity = Depends(reader)):
    """Re-hash the blobs of one ref (or of every version of the tenant)."""
    _own_tenant(who, tenant)
    ref = None
    if body.ref is not None:
        parsed = parse_ref(body.ref, tenant)
        ref = str(_own(who, request, parsed.tenant, parsed.task, _selector(parsed)))
    problems = state(request).scoped(who).verify(ref)
    return {"ok": not problems, "problems": problems}


@router.post("/tenants/{tenant}/gc", response_model=s.GcOut, tags=["admin"])
def gc(tenant: str, body: s.GcRequest, request: Request, who: TokenIdentity = Depends(admin)):
    """Delete the tenant's blobs that no version references (older than ``grace_s``)."""
    _own_tenant(who, tenant)
    removed = state(request).scoped(who).gc(grace_s=body.grace_s, dry_run=body.dry_run, force=body.force)
    return {"removed": removed,
            "dry_run": body.dry_run}


@router.get("/tenants/{tenant}/tokens", response_model=list[s.TokenOut], tags=["admin"])
def list_tokens(tenant: str, request: Request, who: TokenIdentity = Depends(admin)):
    """The tenant's tokens (never the tokens themselves)."""
    _own_tenant(who, tenant)
    return state(request).scoped(who).list_tokens(tenant)


@router.post("/tenants/{tenant}/tokens", response_model=s.TokenCreated, status_code=201, tags=["admin"])
def create_token(tenant: str, body: s.TokenCreate, request: Request, who: TokenIdentity = Depends(admin)):
    """A new token of the tenant; the response is the only time it is shown."""
    _own_tenant(who, tenant)
    token = state(request).scoped(who).create_token(tenant, body.name, body.scope, parse_duration(body.expires))
    return {"name": body.name, "scope": body.scope, "token": token}


@router.delete("/tenants/{tenant}/tokens/{name}", status_code=204, tags=["admin"])
def revoke_token(tenant: str, name: str, request: Request, who: TokenIdentity = Depends(admin)):
    """Revoke the tenant's live tokens called ``name``; effective on their next request."""
    _own_tenant(who, tenant)
    state(request).scoped(who).revoke_token(tenant, name)
    return Response(status_code=204)


def _selector(ref: Ref) -> str:
    return f"v{ref.version}" if ref.version is not None else ref.alias or "latest"


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"created_at {text!r} is not an ISO 8601 time") from None


