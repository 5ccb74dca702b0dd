"""``vopstore serve``: the HTTP embedding and search service (imports torch and FastAPI only when it runs)."""

from __future__ import annotations

from typing import List, Optional

import typer

from vopstore.cli.app import app


@app.command("serve")
def serve(backbone: str = typer.Option(..., "--backbone", help="Hub name or folder of the frozen CLIP."),
          remote: Optional[str] = typer.Option(None, "--remote", help="The registry server (https://...) whose "
                                               "tenant tokens callers send; tasks are pulled with them."),
          load: List[str] = typer.Option([], "--load", help="tenant/task@alias to load before serving (pulled "
                                          "with $VOPSTORE_TOKEN); repeatable."),
          host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8800, "--port"),
          device: str = typer.Option("cpu", "--device"),
          max_batch: int = typer.Option(64, "--max-batch", help="Rows per forward; 1 turns batching off."),
          max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="How long a request waits for company."),
          refresh: float = typer.Option(60.0, "--refresh", help="Seconds between alias checks (0: only on "
                                        "POST /v1/refresh)."),
          token_ttl: float = typer.Option(10.0, "--token-ttl", help="Seconds a checked token is trusted."),
          max_video: str = typer.Option("256MiB", "--max-video", help="Largest video upload."),
          max_seconds: float = typer.Option(600.0, "--max-seconds", help="Longest video upload."),
          max_tasks: Optional[int] = typer.Option(None, "--max-tasks", help="LRU bound on loaded tasks."),
          precompute: str = typer.Option("background", "--precompute", help="Prompt keys/values of a loaded "
                                         "task: background (serve at once, switch to them when computed), "
                                         "on (compute before the load returns) or off."),
          log_level: str = typer.Option("info", "--log-level")) -> None:
    """Serve embeddings and gallery search over HTTP, co-batching requests of many tasks."""
    from vopstore.cli.admin_cmds import parse_size  # importing it registers its commands: only when serve runs
    from vopstore.serving.run import ServeOptions, serve as run

    run(ServeOptions(backbone=backbone, device=device, remote=remote, load=list(load), host=host, port=port,
                     max_rows=max_batch, max_wait_ms=max_wait_ms, refresh_s=refresh, token_ttl_s=token_ttl,
                     max_video_bytes=parse_size(max_video), max_video_seconds=max_seconds, max_tasks=max_tasks,
                     precompute=precompute, log_level=log_level))
