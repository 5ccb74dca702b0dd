"""One progress bar for long work (embedding a gallery, training, a transfer), drawn on stderr.

stderr, so that stdout keeps only results (and ``--json`` stays parseable). A disabled bar
draws nothing and costs nothing: rich is imported only when a bar is shown, so quick
commands (``vopstore ls``) never load it.
"""

from __future__ import annotations

from typing import Any, Literal


class ProgressBar:
    """A rich progress bar, or nothing when ``enabled`` is false.

    Use as ``with ProgressBar("embedding", total=n) as bar: bar.advance(k)``, or
    ``bar.update(completed, total=..., info="loss 0.12")`` for absolute positions.

    Args:
        description: the label left of the bar.
        total: the count (or bytes) at completion; None while unknown.
        enabled: draw the bar (False: every call is a no-op).
        completed: where a resumed job starts.
        unit: ``"items"`` shows done/total; ``"bytes"`` shows sizes and the transfer speed.
        transient: remove the bar when done (a transfer), rather than leave it (a long job's record).
    """

    def __init__(self, description: str, total: float | None = None, *, enabled: bool = True,
                 completed: float = 0, unit: Literal["items", "bytes"] = "items", transient: bool = False) -> None:
        self.description, self.total, self.enabled = description, total, enabled
        self.completed, self.unit, self.transient = completed, unit, transient
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self._bar = self._make_bar()
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.completed, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def advance(self, amount: float = 1) -> None:
        """Move the bar ``amount`` forward."""
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def update(self, completed: float, total: float | None = None, info: str | None = None) -> None:
        """Set the position (and the total when given, 0 meaning unknown), with an optional status text."""
        if self._bar is None:
            return
        fields: dict[str, Any] = {"completed": completed}
        if total is not None:
            fields["total"] = total or None
        if info is not None:
            fields["info"] = info
        self._bar.update(self._task, **fields)

    def _make_bar(self) -> Any:
        from rich.console import Console  # rich costs quick commands a fifth of their start-up
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        amount = (DownloadColumn(), TransferSpeedColumn()) if self.unit == "bytes" else (MofNCompleteColumn(),)
        return Progress(TextColumn("{task.description}"), BarColumn(), *amount, TextColumn("{task.fields[info]}"),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=self.transient)
