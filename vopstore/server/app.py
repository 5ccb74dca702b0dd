"""The registry server's ASGI app: token auth, tenant scoping, problem documents, health and readiness.

The server holds the database and blob credentials; a client holds only a
token. Every ``/v1`` request is authenticated, rate-limited per token, checked
against the scope its route needs, and served by a registry handle scoped to
the token's tenant. Errors are RFC 9457 problem documents whose ``code`` the
client maps back onto :mod:`vopstore.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from http import HTTPStatus

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from vopstore import __version__
from vopstore.errors import (AuthenticationError, PermissionDeniedError, RateLimitedError, StoreUnavailableError,
                             VopstoreError)
from vopstore.server.ratelimit import RateLimiter
from vopstore.server.settings import ServerSettings
from vopstore.server.uploads import UploadFolder
from vopstore.store.direct import DirectRegistry
from vopstore.store.open import open_store
from vopstore.store.tenants import TokenIdentity

log = logging.getLogger("vopstore.server")
PROBLEM_TYPE = "application/problem+json"
_bearer = HTTPBearer(auto_error=False, description="an API token: vopstore token create --tenant T --scope S")


@dataclass
class ServerState:
    """What every request shares in one worker: the unscoped registry (for auth) and the rate limiter."""

    settings: ServerSettings
    registry: object  # DirectRegistry over the server's database and blobs
    limiter: RateLimiter
    uploads: asyncio.Semaphore  # uploads in flight per worker: their spooled files stay under N x max_upload_bytes
    upload_folder: UploadFolder  # resumable uploads' partial bytes, shared by every worker

    def scoped(self, identity: TokenIdentity):
        """A registry handle that reaches only the token's tenant and names the token in the audit log."""
        base = self.registry
        return DirectRegistry(base.engine, base.blobs, url=base.url, tenant=identity.tenant, cache=base.cache,
                              actor=identity.actor)


def problem(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE, headers=headers)


def state(request: Request) -> ServerState:
    return request.app.state.vopstore


def identity(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> TokenIdentity:
    """The caller, from ``Authorization: Bearer <token>``; then one request off its rate bucket."""
    if credentials is None:
        raise AuthenticationError("no token: send 'Authorization: Bearer vop_...' (set VOPSTORE_TOKEN on the client)")
    shared = state(request)
    who = shared.registry.authenticate(credentials.credentials)
    wait = shared.limiter.take(who.key_id)
    if wait is not None:
        raise RateLimitedError(f"token {who.name!r} is over its rate limit; retry in {wait:.2f} s", retry_after=wait)
    return who


def needs(scope: str):
    """A dependency: the caller, if its token's scope includes ``scope`` (else 403 naming the missing scope)."""

    def check(who: TokenIdentity = Depends(identity)) -> TokenIdentity:
        if not who.allows(scope):
            raise PermissionDeniedError(f"token {who.name!r} has scope '{who.scope}'; this request needs the "
                                        f"'{scope}' scope")
        return who

    return check


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The registry app for ``settings`` (default: from ``VOPSTORE_SERVER_*`` variables, as each worker reads them)."""
    from vopstore.server.routes import router  # the routes import this module's dependencies: a cycle

    settings = settings or ServerSettings.from_env()
    registry = open_store(settings.db, blobs=settings.blobs)
    registry.url = settings.name  # messages name the registry, never its database URL ...
    _rename_blobs(registry.blobs, f"{settings.name}'s blob store")  # ... nor its bucket or folder
    app = FastAPI(title="vopstore registry", version=__version__,
                  description="Multi-tenant store of VoP prompt sets. Every /v1 call needs a bearer token.")
    upload_folder = UploadFolder(settings.upload_folder(), settings.upload_ttl_s)
    upload_folder.sweep()  # abandoned sessions go at startup (and whenever a session starts)
    app.state.vopstore = ServerState(settings, registry, RateLimiter(settings.rate, settings.burst),
                                     asyncio.Semaphore(settings.max_concurrent_uploads), upload_folder)
    app.include_router(router, prefix="/v1")
    _add_health(app)
    _add_error_handlers(app)
    return app


def _add_health(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": dict}})
    def readyz(request: Request):
        """The database and the blob store answer."""
        from sqlalchemy import text

        registry = state(request).registry
        try:
            with registry.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            registry.blobs.exists("_vopstore/readyz")
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
            return problem(503, "store_unavailable", f"not ready: {type(exc).__name__}")
        return {"status": "ready"}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VopstoreError)
    async def vopstore_error(request: Request, exc: VopstoreError):
        headers = None
        if isinstance(exc, RateLimitedError):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        elif isinstance(exc, AuthenticationError):
            headers = {"WWW-Authenticate": "Bearer"}
        elif isinstance(exc, StoreUnavailableError):  # the driver's words may name hosts and users: log them
            log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
            return problem(exc.http_status, exc.code, "the registry's database or blob store is unavailable; "
                           "retry later", {"Retry-After": "1"})
        return problem(exc.http_status, exc.code, _one_line(str(exc)), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return problem(422, "invalid_input", _one_line(f"{where}: {first.get('msg', 'invalid request')}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        return problem(exc.status_code, codes.get(exc.status_code, "http_error"), _one_line(str(exc.detail)),
                       getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(500, "internal", "internal error; the server log has the details")


def _rename_blobs(blobs, name: str) -> None:
    """Make every layer of the blob backend (wrappers included) call itself ``name`` in messages."""
    seen = set()
    while blobs is not None and id(blobs) not in seen:
        seen.add(id(blobs))
        if "url" in vars(blobs):
            blobs.url = name
        blobs = next((getattr(blobs, a) for a in ("_blobs", "backend") if a in vars(blobs)), None)


def _one_line(text: str) -> str:
    return " ".join(text.split())
