"""Run the service: build the Retriever, load the --load tasks, start the refresh loop, serve with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field

import uvicorn

from vopstore.errors import ConfigError
from vopstore.gallery import Galleries
from vopstore.refs import parse_ref
from vopstore.runtime.retriever import Retriever
from vopstore.serving.app import create_app
from vopstore.serving.auth import Caller
from vopstore.serving.service import Service
from vopstore.store import open_store

log = logging.getLogger("vopstore.serving")


@dataclass
class ServeOptions:
    backbone: str
    device: str = "cpu"
    remote: str | None = None
    load: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8800
    max_rows: int = 64
    max_wait_ms: float = 5.0
    refresh_s: float = 60.0
    token_ttl_s: float = 10.0
    max_video_bytes: int = 256 * 1024 * 1024
    max_video_seconds: float = 600.0
    max_tasks: int | None = None
    precompute: str = "background"  # "on", "off" or "background" (see PRECOMPUTE)
    log_level: str = "info"


# --precompute: how a loaded set gets its precomputed prompt keys/values. "background" (the
# default) keeps a load or an alias switch from waiting on them: the set serves at once through
# the full forward (same outputs) and is switched to its cache when it is ready.
PRECOMPUTE = {"on": True, "off": False, "background": "background"}


def build_service(options: ServeOptions):
    """The Service for ``options`` (backbone loaded; nothing loaded yet)."""
    if options.precompute not in PRECOMPUTE:
        raise ConfigError(f"--precompute must be one of {', '.join(PRECOMPUTE)}, got {options.precompute!r}")
    remote = options.remote  # a registry server's URL: each caller's own token reads from it
    if remote and not remote.startswith(("http://", "https://")):
        remote = open_store(remote)  # a trusted direct store (its token table checks the callers)
    retriever = Retriever(options.backbone, options.device, max_tasks=options.max_tasks,
                          precompute=PRECOMPUTE[options.precompute])
    return Service(retriever, remote=remote, galleries=Galleries(), max_rows=options.max_rows,
                   max_wait_s=options.max_wait_ms / 1000, token_ttl_s=options.token_ttl_s,
                   max_video_seconds=options.max_video_seconds, max_video_bytes=options.max_video_bytes)


def start_service(options: ServeOptions):
    """The Service for ``options`` with its ``--load`` tasks loaded, keys/values included: ready to serve."""
    service = build_service(options)
    token = os.environ.get("VOPSTORE_TOKEN")
    for ref in options.load:  # before the port opens: /readyz is true from the first request
        _load_at_start(service, ref, token)
    service.retriever.wait_precomputed()  # /readyz turns true at full speed
    service.ready = True
    return service


def serve(options: ServeOptions) -> None:
    service = start_service(options)
    app = create_app(service)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        task = asyncio.create_task(_refresh_every(service, options.refresh_s)) if options.refresh_s > 0 else None
        yield
        if task is not None:
            task.cancel()
        service.close()

    app.router.lifespan_context = lifespan
    uvicorn.run(app, host=options.host, port=options.port, log_level=options.log_level, proxy_headers=True,
                server_header=False)


def _load_at_start(service, ref: str, token: str | None) -> None:
    parsed = parse_ref(ref, service.local.default_tenant if service.remote is None else
                       service.auth.check(token).tenant)
    selector = f"v{parsed.version}" if parsed.version else parsed.alias or "latest"
    service.load(Caller(parsed.tenant, "startup", "admin"), parsed.tenant, parsed.task, selector, token)


async def _refresh_every(service, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(service.refresh)
        except Exception:  # noqa: BLE001 - the loop must outlive one bad refresh
            log.exception("refresh failed")
