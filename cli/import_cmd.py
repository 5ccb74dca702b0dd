"""``vopstore import-checkpoint``: the authors' released VoP weights as a version (a thin wrapper over vopstore.importer)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vopstore.cli.app import app
from vopstore.cli.output import print_json


@app.command("import-checkpoint")
def import_checkpoint(
    file: Path = typer.Argument(..., help="the released checkpoint, e.g. VoP_msrvtt9k.pth"),
    task: str = typer.Option(..., "--task", help="task to add the version to, e.g. msrvtt"),
    fmt: str = typer.Option("modelscope", "--format", help="the checkpoint's layout: modelscope (the authors' "
                            "release: OpenAI-layout CLIP + text and visual prompts)"),
    backbone_out: Optional[Path] = typer.Option(None, "--backbone-out", help="folder for the converted CLIP "
                                                "(default: $VOPSTORE_HOME/backbones/clip-<digest of its weights>)"),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="the version's message"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of text."),
) -> None:
    """Convert FILE's CLIP into a backbone folder and register its prompts as the next vop version of TASK."""
    from vopstore.importer import import_checkpoint as run_import

    result = run_import(file, task, format=fmt, backbone_out=backbone_out, message=message)
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(f"{result.info.ref}  (backbone {result.backbone_dir}, fingerprint {result.backbone_fingerprint[:12]})")
    typer.echo(f"load it with that backbone: Retriever({str(result.backbone_dir)!r}).load({result.info.ref!r})")
