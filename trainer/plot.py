"""The storage plot: text-to-video R@1 against the bytes one stored version costs, per task.

One panel per task, stored bytes on a log axis (a prompt set and a full
fine-tune are five orders of magnitude apart), one labelled point per method and
the zero-shot backbone as a dashed line: a method earns its bytes by how far it
rises above that line.

Drawn on matplotlib's Agg canvas directly, without pyplot, so nothing global
(the user's backend, open figures) changes when a library call draws a plot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vopstore.trainer.compare import Comparison

PANEL_INCHES = (6.0, 4.5)


def plot_storage(comparisons: Sequence[Comparison], path: str | os.PathLike) -> Path:
    """Write the storage plot of ``comparisons`` (one panel per task) to ``path`` (format from its suffix).

    Raises:
        ValueError: ``comparisons`` is empty or one of them has no methods.
    """
    if not comparisons:
        raise ValueError("plot_storage needs at least one comparison")
    figure = Figure(figsize=(PANEL_INCHES[0] * len(comparisons), PANEL_INCHES[1]), layout="constrained")
    FigureCanvasAgg(figure)
    for index, comparison in enumerate(comparisons):
        _draw_task(figure.add_subplot(1, len(comparisons), index + 1), comparison)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def _draw_task(axes, comparison: Comparison) -> None:
    if not comparison.rows:
        raise ValueError(f"the comparison of {comparison.task} has no methods to plot")
    sizes = [row.stored_bytes for row in comparison.rows]
    recalls = [row.metrics["t2v"]["R@1"] for row in comparison.rows]
    axes.scatter(sizes, recalls, s=36, zorder=3)
    for row, x, y in zip(comparison.rows, sizes, recalls):
        axes.annotate(row.method, (x, y), xytext=(5, 5), textcoords="offset points", fontsize=9)
    zero_shot = comparison.zero_shot["t2v"]["R@1"]
    axes.axhline(zero_shot, linestyle="--", color="grey", label=f"zero-shot ({zero_shot:.1f})")
    axes.set_xscale("log")
    axes.set_xlim(min(sizes) / 3, max(sizes) * 3)  # room for the labels on a single-size plot too
    axes.set_xlabel("bytes per stored version (log scale)")
    axes.set_ylabel("text-to-video R@1 (%)")
    axes.set_title(comparison.task)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
