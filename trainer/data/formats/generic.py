"""The generic format for users' own tasks: one (video, caption) pair per row.

Expected layout::

    root/
      train.jsonl   {"video": "clips/a.mp4", "caption": "a dog runs"} per line
      test.jsonl    (or train.csv / test.csv with a header row ``video,caption``)
      clips/...     video paths are relative to the annotation file (absolute also works)

Any split name works if ``{split}.jsonl`` or ``{split}.csv`` exists (``val``, ``dev``...).
A video may appear on several rows (several captions); extra keys/columns are ignored.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from vopstore.errors import ConfigError, FileMissingError
from vopstore.trainer.data.sample import ErrorPolicy, Sample, SampleList

COLUMNS = ("video", "caption")
_SPLIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def find_file(root: Path, split: str) -> Path:
    """The annotation file of ``split``: ``{split}.jsonl`` first, then ``{split}.csv``."""
    if not _SPLIT.fullmatch(split) or ".." in split:
        raise ConfigError(f"split names are letters, digits, '.', '_' or '-' (a file stem in root), got {split!r}")
    for ext in (".jsonl", ".csv"):
        path = root / f"{split}{ext}"
        if path.is_file():
            return path
    raise FileMissingError(f"no annotations for split {split!r}: expected {root / split}.jsonl or .csv")


def read(root: Path, split: str, policy: ErrorPolicy, videos_dir: Path | None = None) -> SampleList:
    """Read one split of the generic format; ``videos_dir`` overrides the annotation file's folder."""
    path = find_file(root, split)
    rows = _jsonl_rows(path, policy) if path.suffix == ".jsonl" else _csv_rows(path, policy)
    base = Path(videos_dir) if videos_dir else path.parent
    samples = []
    for line, video, caption in rows:
        video_path = base / video
        if not video_path.is_file():
            policy.bad(path, line, f"video not found: {video_path}")
            continue
        samples.append(Sample(video_path, caption, video))
    return policy.result(samples)


def _row(path: Path, line: int, row, policy: ErrorPolicy):
    values = [row.get(k) if isinstance(row, dict) else None for k in COLUMNS]
    if not all(isinstance(v, str) and v.strip() for v in values):
        policy.bad(path, line, "malformed row: expected non-empty string fields 'video' and 'caption'")
        return None
    return line, values[0].strip(), values[1].strip()


def _jsonl_rows(path: Path, policy: ErrorPolicy):
    with open(path, encoding="utf-8") as fh:
        for line, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                policy.bad(path, line, f"invalid JSON: {exc.msg} at column {exc.colno}")
                continue
            parsed = _row(path, line, row, policy)
            if parsed:
                yield parsed


def _csv_rows(path: Path, policy: ErrorPolicy):
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            policy.fatal(path, 1, f"header lacks column(s) {', '.join(missing)}; found {reader.fieldnames}")
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                policy.bad(path, reader.line_num, f"malformed row: expected {len(reader.fieldnames)} fields "
                                                  f"({','.join(reader.fieldnames)})")
                continue
            parsed = _row(path, reader.line_num, row, policy)
            if parsed:
                yield parsed
