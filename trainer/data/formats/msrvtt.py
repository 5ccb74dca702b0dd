"""MSR-VTT: 9k or 7k training videos with all ~20 captions each; the 1k-A (JSFusion) test set.

Expected layout (X-Pool / CLIP4Clip)::

    root/
      MSRVTT_train.9k.csv         column video_id (video0, ...)
      MSRVTT_train.7k.csv         column video_id
      MSRVTT_data.json            {"sentences": [{"video_id", "caption", ...}], "videos": [...]}
      MSRVTT_JSFUSION_test.csv    columns key,vid_key,video_id,sentence (1 caption per video)
      videos/all/ | videos/ | vids/ | .    {video_id}.mp4, falling back to {video_id}.webm

Splits: ``train`` (9k if its list exists, else 7k), ``train-9k``, ``train-7k``, ``test``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from vopstore.errors import DataError
from vopstore.trainer.data.formats._common import check_split, load_json, pick_dir, require_file
from vopstore.trainer.data.sample import ErrorPolicy, Sample, SampleList

SPLITS = ("train", "train-9k", "train-7k", "test")
MARKERS = ("MSRVTT_JSFUSION_test.csv", "MSRVTT_data.json")
VIDEO_DIRS = ("videos/all", "videos", "vids", "MSRVTT_Videos", ".")


def read(root: Path, split: str, policy: ErrorPolicy, videos_dir: Path | None = None) -> SampleList:
    """Read one MSR-VTT split; see the module docstring for the layout."""
    check_split("msrvtt", split, SPLITS)
    videos = Path(videos_dir) if videos_dir else pick_dir(root, VIDEO_DIRS)
    if split == "test":
        pairs = _test_pairs(root, policy)
    else:
        pairs = _train_pairs(root, _train_list(root, split), policy)
    samples = []
    for source, line, video_id, caption in pairs:
        path = _video_path(videos, video_id)
        if path is None:
            policy.bad(source, line, f"video not found: {videos / video_id}.mp4 (nor .webm)")
            continue
        samples.append(Sample(path, caption, video_id))
    return policy.result(samples)


def _train_list(root: Path, split: str) -> Path:
    if split == "train":
        nine = root / "MSRVTT_train.9k.csv"
        return nine if nine.is_file() else require_file(root / "MSRVTT_train.7k.csv", "MSR-VTT train list")
    size = split.split("-")[1]
    return require_file(root / f"MSRVTT_train.{size}.csv", f"MSR-VTT {size} train list")


def _csv_rows(path: Path, columns: tuple[str, ...], policy: ErrorPolicy):
    """Yield (line, row dict) for well-formed rows; a missing column in the header is fatal."""
    with open(require_file(path, "MSR-VTT list"), newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise_header(path, missing, reader.fieldnames)
        for row in reader:
            line = reader.line_num
            if None in row or any(row.get(c) in (None, "") for c in columns):
                policy.bad(path, line, f"malformed row: expected columns {','.join(reader.fieldnames)}")
                continue
            yield line, row


def raise_header(path: Path, missing: list[str], found) -> None:
    raise DataError(f"{path}:1: header lacks column(s) {', '.join(missing)}; found {found}")


def _test_pairs(root: Path, policy: ErrorPolicy):
    path = root / "MSRVTT_JSFUSION_test.csv"
    for line, row in _csv_rows(path, ("video_id", "sentence"), policy):
        yield path, line, row["video_id"].strip(), row["sentence"].strip()


def _train_pairs(root: Path, list_path: Path, policy: ErrorPolicy):
    wanted = {row["video_id"].strip(): line for line, row in _csv_rows(list_path, ("video_id",), policy)}
    data_path = root / "MSRVTT_data.json"
    data = load_json(data_path, "MSRVTT_data.json")
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list):
        raise DataError(f"{data_path}: expected a 'sentences' list of {{video_id, caption}}; re-download it")
    seen = set()
    for i, item in enumerate(sentences):
        if not isinstance(item, dict) or not isinstance(item.get("caption"), str):
            policy.bad(data_path, None, f"sentences[{i}] is not a {{video_id, caption}} object")
            continue
        if item.get("video_id") in wanted:
            seen.add(item["video_id"])
            yield data_path, None, item["video_id"], item["caption"].strip()
    for video_id, line in wanted.items():
        if video_id not in seen:
            policy.bad(list_path, line, f"video {video_id} has no caption in {data_path.name}")


def _video_path(videos: Path, video_id: str) -> Path | None:
    for ext in (".mp4", ".webm"):
        path = videos / f"{video_id}{ext}"
        if path.is_file():
            return path
    return None
