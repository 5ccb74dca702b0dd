"""Helpers shared by the dataset readers: required files, JSON with line numbers, video lookup."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vopstore.errors import ConfigError, DataError, FileMissingError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp")


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise :class:`FileMissingError` saying what it is for."""
    if not path.is_file():
        raise FileMissingError(f"{what} not found: expected the file {path}; check the dataset root")
    return path


def load_json(path: Path, what: str) -> Any:
    """Parse a whole JSON file; a syntax error names the file and the line (a file-level error, never skipped)."""
    text = require_file(path, what).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); fix or re-download {what}") from None


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-empty stripped lines with their 1-based line numbers."""
    text = require_file(path, what).read_text(encoding="utf-8")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def index_videos(folder: Path) -> dict[str, Path]:
    """Map file name AND stem to path for every video under ``folder`` (recursive, sorted, first wins).

    Walking once is how CLIP4Clip finds LSMDC, DiDeMo and ActivityNet clips, which
    come in several layouts (flat, ``{movie}/{clip}.avi``) and extensions.
    """
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                found.setdefault(name, path)
                found.setdefault(path.stem, path)
    return found


def index_files(folder: Path) -> dict[str, Path]:
    """Map the exact file name of every file under ``folder`` to its path (recursive, sorted, first wins).

    For datasets whose annotations name each video file, extension included, whatever
    it is (DiDeMo holds ``.wmv``, ``.mts``, ``.3g2`` and names that end in a bare ``.``).
    """
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            found.setdefault(name, Path(dirpath) / name)
    return found


def name_stem(name: str) -> str:
    """``name`` without its last ``.extension`` (``"a.b.mts"`` -> ``"a.b"``, ``"x."`` -> ``"x"``)."""
    head, dot, _ = name.rpartition(".")
    return head if dot and head else name


def pick_dir(root: Path, candidates: tuple[str, ...]) -> Path:
    """The first existing sub-folder of ``root`` among ``candidates`` (``"."`` = root itself)."""
    for name in candidates:
        path = root / name
        if path.is_dir():
            return path
    return root


def check_split(fmt: str, split: str, known: tuple[str, ...]) -> None:
    if split not in known:
        raise ConfigError(f"format {fmt!r} has no split {split!r}; expected one of {', '.join(known)}")
