"""``vopstore methods``: the six VoP methods and what each one trains on CLIP ViT-B/32.

Counts come from building every method on the meta device (no weights, no
memory), so the command is fast; torch is imported only when it runs.
"""

from __future__ import annotations

import typer

from vopstore.cli.app import app
from vopstore.cli.output import print_json, print_table


@app.command("methods")
def methods(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")) -> None:
    """List the prompt methods with their trainable parameters and share of the ViT-B/32 backbone."""
    from vopstore.prompts.registry import PAPER_FULL_PARAMS, VIT_B32_PARAMS, method_table

    rows = method_table()
    if as_json:
        print_json(rows)
        return
    print_table(
        ["method", "trainable", "share", "paper count", "paper share", "summary"],
        [(r["name"], f"{r['trainable_params']:,}", f"{100 * r['share']:.3f}%", f"{r['paper_params']:,}",
          f"{100 * r['paper_share']:.3f}%", r["summary"]) for r in rows],
        title=f"VoP methods on CLIP ViT-B/32 ({VIT_B32_PARAMS:,} backbone parameters)",
    )
    typer.echo(f"trainable = every tensor that trains and is saved, including the frame position embedding "
               f"of the F methods; paper count leaves it out, as Table 1 does; paper share divides by the "
               f"paper's {PAPER_FULL_PARAMS / 1e6:.1f} M 'Full' count.")
