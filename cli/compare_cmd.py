"""``vopstore compare``: the paper's table on the user's data (a thin wrapper over vopstore.trainer.compare)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from vopstore.cli.app import app
from vopstore.cli.output import print_json, print_table
from vopstore.errors import ConfigError
from vopstore.refs import validate_name

_MEMORY_NOTES = {"cuda": "torch.cuda.max_memory_allocated of the method's own training process",
                 "rss": "peak resident memory of the method's own training process above its size after imports"}


@app.command()
def compare(
    task: str = typer.Option(..., "--task", help="task name; every method's version is registered under it"),
    methods: str = typer.Option(..., "--methods", help="comma-separated, e.g. vop,vop-f (see `vopstore methods`)"),
    data: Optional[str] = typer.Option(None, "--data", help="dataset folder (any format `vopstore train` reads)"),
    synthetic: bool = typer.Option(False, "--synthetic", help="the demo's synthetic task and small CLIP, offline"),
    preset: Optional[str] = typer.Option(None, "--preset", help="with --data: msrvtt-9k, msrvtt-7k, lsmdc, didemo, ..."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="with --data: CLIP hub name or local folder"),
    sets: list[str] = typer.Option([], "--set", help="any training option as key=value, for every method (repeatable)"),
    store: Optional[str] = typer.Option(None, "--store", help="store URL (default: the local store)"),
    plot: Optional[str] = typer.Option(None, "--plot", help="also draw t2v R@1 against stored bytes to this PNG"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON object instead of a table"),
    quick: bool = typer.Option(False, "--quick", hidden=True, help="with --synthetic: tiny sizes, for the test suite"),
) -> None:
    """Train each method on the same split and seed, evaluate them and the zero-shot backbone, print the table."""
    from vopstore.trainer import compare as comparing  # torch: `vopstore --help` imports this module

    names = comparing.parse_methods(methods)  # before any data is read or generated
    validate_name(task, "task")
    if synthetic == bool(data):
        raise ConfigError("give either --data DIR or --synthetic, not both or neither")
    if synthetic and (preset or backbone):
        raise ConfigError("--preset and --backbone apply to --data; --synthetic uses the demo's task and CLIP")
    say = None if as_json else (lambda text: print(text, file=sys.stderr, flush=True))
    if synthetic:
        folder, base = comparing.synthetic_setup(quick, sets, log=say)
    else:
        folder, base = data, comparing.data_config(task, preset, backbone, sets)
    result = comparing.compare_methods(task, folder, base, names, store_url=store, log=say,
                                       progress=not as_json and sys.stderr.isatty())
    if plot:
        from vopstore.trainer.plot import plot_storage  # matplotlib: only with --plot

        written = plot_storage([result], plot)
        if say:
            say(f"plot: {written}")
    if as_json:
        print_json(result.to_dict())
        return
    _print_comparison(result)


def _print_comparison(result) -> None:
    # Several numbers to a cell keep the paper's one table to about 130 columns instead of 200.
    columns = ["method", "params (M, %)", "stored", "t2v R@1/5/10", "t2v MdR/MnR", "v2t R@1/5/10", "v2t MdR/MnR",
               "train s", "peak mem"]
    rows = [["zero-shot", "0", "0 B", *_metric_cells(result.zero_shot), "", ""]]
    for row in result.rows:
        partial = "*" if row.resumed_from else ""
        rows.append([row.method, f"{row.params / 1e6:.4g} ({100 * row.share:.3g}%)", human_bytes(row.stored_bytes),
                     *_metric_cells(row.metrics), f"{row.seconds:.1f}{partial}",
                     f"{human_bytes(row.peak_memory)}{partial}"])
    backbone = f"{result.backbone} ({result.backbone_params / 1e6:.1f} M parameters)"
    print_table(columns, rows, title=f"{result.task}: methods on {backbone}")
    for row in result.rows:
        typer.echo(f"{row.method}: {row.ref}{' (re-used)' if row.reused else ''}")
    for kind in sorted({row.memory_kind for row in result.rows}):
        typer.echo(f"peak mem ({kind}): {_MEMORY_NOTES.get(kind, kind)}")
    if any(row.resumed_from for row in result.rows):
        typer.echo("*: resumed an interrupted training; time and memory cover only the resumed part")


def _metric_cells(metrics: dict) -> list[str]:
    """[t2v R@1/5/10, t2v MdR/MnR, v2t R@1/5/10, v2t MdR/MnR] as slash-joined numbers."""
    cells = []
    for direction in ("t2v", "v2t"):
        values = metrics.get(direction, {})
        for keys in (("R@1", "R@5", "R@10"), ("MdR", "MnR")):
            cells.append("/".join(f"{values.get(k, float('nan')):.1f}" for k in keys))
    return cells


def human_bytes(count: int) -> str:
    """``1536`` -> ``1.5 KiB``: binary units, one decimal."""
    value, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
