"""Run the registry under uvicorn: one process against SQLite, several (``--workers``) against PostgreSQL."""

from __future__ import annotations

import os

from vopstore.errors import ConfigError
from vopstore.server.settings import ServerSettings


def serve(settings: ServerSettings, host: str, port: int, workers: int, log_level: str = "info") -> None:
    """Check the store opens, then serve; each worker process builds its app from ``VOPSTORE_SERVER_*``."""
    import uvicorn

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and not settings.db.startswith("postgresql"):
        raise ConfigError("several workers need PostgreSQL (SQLite serialises writers in one process); "
                          "use --workers 1 or a postgresql+psycopg:// database")
    from vopstore.server.app import create_app

    create_app(settings).state.vopstore.registry.close()  # fail here, in one line, if the store cannot be opened
    os.environ.update(settings.to_env())
    uvicorn.run("vopstore.server.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, proxy_headers=True, server_header=False)
