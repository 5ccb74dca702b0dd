"""Output helpers shared by every command: tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, NoReturn, Sequence


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit; never a traceback for a user error."""
    first_line = " ".join(str(message).split("\n")).strip()
    sys.stderr.write(f"error: {first_line}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """Render rows as a rich table (rich is imported here, not at CLI start-up)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console(soft_wrap=True).print(table)
