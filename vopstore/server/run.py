"""Run the registry under uvicorn: one process against SQLite, several (``--workers``) against PostgreSQL."""

from __future__ import annotations

import os
import socket

import uvicorn
from uvicorn.supervisors import Multiprocess

from vopstore.errors import ConfigError
from vopstore.server.app import create_app
from vopstore.server.settings import ServerSettings


class NoDelayConfig(uvicorn.Config):
    """uvicorn's config, with a listening socket that says it is TCP.

    uvicorn binds the socket it shares between workers with ``proto=0``; asyncio
    then never sets ``TCP_NODELAY`` on accepted connections, and each keep-alive
    response waits ~40 ms for the client's delayed ACK (Nagle). Re-opening the
    same descriptor with ``IPPROTO_TCP`` restores what a single worker gets.
    """

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return sock
        tcp = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        tcp.set_inheritable(True)
        return tcp


def serve(settings: ServerSettings, host: str, port: int, workers: int, log_level: str = "info") -> None:
    """Check the store opens, then serve; each worker process builds its app from ``VOPSTORE_SERVER_*``."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and not settings.db.startswith("postgresql"):
        raise ConfigError("several workers need PostgreSQL (SQLite serialises writers in one process); "
                          "use --workers 1 or a postgresql+psycopg:// database")
    create_app(settings).state.vopstore.registry.close()  # fail here, in one line, if the store cannot be opened
    os.environ.update(settings.to_env())
    config = NoDelayConfig("vopstore.server.app:create_app", factory=True, host=host, port=port, workers=workers,
                           log_level=log_level, proxy_headers=True, server_header=False)
    if workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()
