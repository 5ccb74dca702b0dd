"""``vopstore methods``: the VoP family and the paper's baselines, and what each costs on CLIP ViT-B/32.

Counts and stored bytes come from shapes on the meta device (no weights, no memory),
so the command is fast; torch is imported only when it runs.
"""

from __future__ import annotations

import typer

from vopstore.cli.app import app
from vopstore.cli.output import print_json, print_table


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _runtime(row: dict) -> str:
    if not row["served"]:
        return "not served"
    return "co-batched" if row["co_batch"] else "own model"


@app.command("methods")
def methods(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")) -> None:
    """List the prompt methods and the baselines: trainable parameters, share of ViT-B/32, stored bytes, serving."""
    from vopstore.baselines.table import methods_table
    from vopstore.prompts.registry import PAPER_FULL_PARAMS, VIT_B32_PARAMS

    rows = methods_table()
    if as_json:
        print_json(rows)
        return
    print_table(
        ["method", "family", "trainable", "share", "paper share", "stored", "runtime", "summary"],
        [(r["name"], r["family"], f"{r['trainable_params']:,}", f"{100 * r['share']:.3f}%",
          f"{100 * r['paper_share']:.3f}%", _bytes(r["stored_bytes"]), _runtime(r), r["summary"]) for r in rows],
        title=f"Methods on CLIP ViT-B/32 ({VIT_B32_PARAMS:,} backbone parameters)",
    )
    typer.echo(f"trainable = every tensor that trains and is saved, including the frame position embedding of the "
               f"F methods; paper share = the count Table 1 uses (without that embedding) over the paper's "
               f"{PAPER_FULL_PARAMS / 1e6:.1f} M 'Full'; stored = the bytes of one version's file at fp32. "
               "runtime: co-batched = rows of many versions share a forward on the one backbone; own model = "
               "its tensors sit beside the backbone's and its rows run in a forward of their own.")
