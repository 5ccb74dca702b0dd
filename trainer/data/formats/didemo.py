"""DiDeMo paragraph-to-video: all descriptions of a video joined with spaces, whole clip.

Expected layout (CLIP4Clip)::

    root/
      train_list.txt | val_list.txt | test_list.txt    one video file name per line
      train_data.json | val_data.json | test_data.json  [{"video", "description", "times", ...}]
      <any sub-folders>/<video file>                    matched by file name, or by stem
                                                        (for re-encoded copies)

Splits: ``train``, ``val``, ``test``. Videos listed without any description are skipped.
"""

from __future__ import annotations

from pathlib import Path

from vopstore.trainer.data.formats._common import check_split, index_videos, load_json, read_lines
from vopstore.trainer.data.sample import ErrorPolicy, Sample, SampleList

SPLITS = ("train", "val", "test")
MARKERS = ("train_list.txt", "test_list.txt", "train_data.json", "test_data.json")


def read(root: Path, split: str, policy: ErrorPolicy, videos_dir: Path | None = None) -> SampleList:
    """Read one DiDeMo split as one paragraph per video; see the module docstring for the layout."""
    check_split("didemo", split, SPLITS)
    list_path = root / f"{split}_list.txt"
    wanted = read_lines(list_path, f"DiDeMo {split} list")
    texts = _descriptions(root / f"{split}_data.json", policy)
    videos = index_videos(Path(videos_dir) if videos_dir else root)
    samples = []
    for line, name in wanted:
        if name not in texts:
            policy.bad(list_path, line, f"video {name} has no description in {split}_data.json")
            continue
        video = videos.get(name) or videos.get(Path(name).stem)
        if video is None:
            policy.bad(list_path, line, f"video not found: no file {name} (or same stem) under {videos_dir or root}")
            continue
        samples.append(Sample(video, " ".join(texts[name]), name))
    return policy.result(samples)


def _descriptions(path: Path, policy: ErrorPolicy) -> dict[str, list[str]]:
    data = load_json(path, "DiDeMo annotations")
    if not isinstance(data, list):
        policy.fatal(path, None, "expected a JSON list of {video, description} objects")
    texts: dict[str, list[str]] = {}
    for i, item in enumerate(data):
        ok = isinstance(item, dict) and isinstance(item.get("video"), str)
        if not ok or not isinstance(item.get("description"), str):
            policy.bad(path, None, f"item [{i}] is not a {{video, description}} object")
            continue
        texts.setdefault(item["video"], []).append(item["description"].strip())
    return texts
