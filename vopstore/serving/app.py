"""The embedding and search service's HTTP layer (FastAPI): auth, bounded uploads, metrics, problem documents."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from vopstore.errors import ConfigError, DataError, PermissionDeniedError, QuotaExceededError
from vopstore.server.app import PROBLEM_TYPE, _add_error_handlers, problem
from vopstore.server.schemas import Problem
from vopstore.serving.auth import Caller

_bearer = HTTPBearer(auto_error=False, description="a registry token of your tenant (read scope)")
_PROBLEMS = {code: {"model": Problem, "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                    "description": text}
             for code, text in {401: "no or bad token", 403: "the token lacks the scope",
                                404: "task or gallery not loaded here (also: another tenant's)",
                                413: "upload too large", 422: "invalid input"}.items()}
MAX_TEXTS = 256
MAX_TEXT_CHARS = 2_000


class TextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)
    task: Optional[str] = Field(None, max_length=140, description="tenant/task (or task) for every row")
    tasks: Optional[list[Optional[str]]] = Field(None, description="one task per row; null: zero-shot CLIP")
    normalize: bool = True


class SearchRequest(TextRequest):
    gallery: str = Field(max_length=140)
    k: int = Field(10, ge=1, le=1000)


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    selector: str = Field("latest", max_length=80, description="vN, an alias, or latest: the ref to follow")


def create_app(service) -> FastAPI:
    app = FastAPI(title="vopstore serving", description="Embed text and video and search galleries with any "
                  "loaded task's prompts; requests of many tasks share one forward.")
    app.state.service = service
    _add_error_handlers(app)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        service.metrics.latency.labels(getattr(route, "path", "unmatched"), str(response.status_code)).observe(
            time.perf_counter() - started)
        return response

    def caller(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Caller:
        return service.auth.check(credentials.credentials if credentials else None)

    def admin(who: Caller = Depends(caller)) -> Caller:
        if not who.allows("admin"):
            raise PermissionDeniedError(f"token {who.name!r} has scope '{who.scope}'; loading and unloading need "
                                        "the 'admin' scope")
        return who

    @app.post("/v1/embed/text", responses=_PROBLEMS)
    async def embed_text(body: TextRequest, who: Caller = Depends(caller)) -> dict:
        """Text embeddings, one per row, each exactly what its task gives alone."""
        _check_texts(body.texts)
        out, versions = await service.embed_text(who, body.texts, body.task, body.tasks, body.normalize)
        return {"embeddings": out.tolist(), "versions": versions}

    @app.post("/v1/embed/video", responses=_PROBLEMS, openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def embed_video(request: Request, task: Optional[str] = Query(None, max_length=140),
                          normalize: bool = Query(True), who: Caller = Depends(caller)) -> dict:
        """The embedding of one uploaded video file (size and duration bounded)."""
        async with _upload(request, service.max_video_bytes) as path:
            out, versions = await service.embed_video(who, path, task, normalize)
        return {"embedding": out[0].tolist(), "versions": versions}

    @app.post("/v1/search", responses=_PROBLEMS)
    async def search(body: SearchRequest, who: Caller = Depends(caller)) -> dict:
        """The top-k videos of a gallery for each text, with each row's task's prompts."""
        _check_texts(body.texts)
        hits, versions = await service.search(who, body.texts, body.gallery, body.k, body.task, body.tasks)
        return {"results": [[{"id": i, "score": s} for i, s in row] for row in hits], "versions": versions}

    @app.get("/v1/tasks", responses=_PROBLEMS)
    def tasks(who: Caller = Depends(caller)) -> list[dict[str, Any]]:
        """The caller's tenant's loaded tasks: version, digest, bytes, what they follow, last use."""
        return service.tasks(who)

    @app.post("/v1/tasks/{tenant}/{task}:load", responses=_PROBLEMS)
    def load(tenant: str, task: str, body: LoadRequest | None = None, who: Caller = Depends(admin),
             credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> dict:
        """Pull (with the caller's token) and load a task's version; follow ``selector`` from now on."""
        info = service.load(who, tenant, task, (body or LoadRequest()).selector,
                            credentials.credentials if credentials else None)
        return info.to_dict()

    @app.post("/v1/tasks/{tenant}/{task}:unload", responses=_PROBLEMS)
    def unload(tenant: str, task: str, who: Caller = Depends(admin)) -> dict:
        return service.unload(who, tenant, task).to_dict()

    @app.post("/v1/refresh", responses=_PROBLEMS)
    def refresh(who: Caller = Depends(admin)) -> dict:
        """Follow moved aliases now (also done every --refresh seconds)."""
        return {task: info.ref for task, info in service.refresh(who.tenant).items()}

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        if not service.ready:
            return problem(503, "store_unavailable", "loading the backbone and the --load tasks")
        return {"status": "ready"}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def _check_texts(texts: list[str]) -> None:
    for text in texts:
        if len(text) > MAX_TEXT_CHARS:
            raise ConfigError(f"a text of {len(text)} characters is over the limit of {MAX_TEXT_CHARS}; "
                              "CLIP reads 77 tokens anyway")


@contextlib.asynccontextmanager
async def _upload(request: Request, limit: int):
    """The request body in a temporary file, refused (413) past ``limit`` bytes without reading further."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise QuotaExceededError(f"video of {declared} bytes is over this server's limit of {limit} bytes")
    with tempfile.TemporaryDirectory(prefix="vopstore-upload-") as folder:
        path = Path(folder) / "upload.mp4"
        size = 0
        with open(path, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise QuotaExceededError(f"video is over this server's limit of {limit} bytes")
                await asyncio.to_thread(out.write, chunk) if len(chunk) > 1 << 20 else out.write(chunk)
        if size == 0:
            raise DataError("empty body: send the video file's bytes (Content-Type: application/octet-stream)")
        yield path
