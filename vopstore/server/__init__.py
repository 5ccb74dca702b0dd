"""The multi-tenant registry server: an ASGI app (FastAPI) over a direct store, reached with scoped tokens.

``vopstore registry serve`` runs it under uvicorn; :func:`create_app` builds it
(for tests or another ASGI server). FastAPI and uvicorn are imported only here.
"""

from vopstore.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "serve"]


def create_app(settings: ServerSettings | None = None):
    from vopstore.server.app import create_app as build

    return build(settings)


def serve(settings: ServerSettings, host: str = "127.0.0.1", port: int = 8700, workers: int = 1,
          log_level: str = "info") -> None:
    from vopstore.server.run import serve as run

    run(settings, host, port, workers, log_level)
