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
    """Print rows as aligned plain-text columns under a header and a rule.

    Plain text rather than rich: importing rich costs `vopstore ls` a fifth of its start-up,
    and plain columns never fold a long ref or digest when the output is piped.
    """
    cells = [[str(c) for c in columns], *(["" if cell is None else str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    sys.stdout.write("".join(f"{line}\n" for line in ([title] if title else []) + lines))
