"""ActivityNet Captions paragraph-to-video: sentences of a video joined; evaluated on val1.

Expected layout (CLIP4Clip)::

    root/
      train_ids.json | val_ids.json      JSON lists of pseudo ids "v_XXXXXXXXXXX"
      train.json | val_1.json            {pseudo_id: {"duration", "timestamps", "sentences"}}
      <any sub-folders>/XXXXXXXXXXX.<ext>   file stem = pseudo_id[2:], any video extension

Splits: ``train``; ``val1`` (alias ``test``), the evaluation split of the paper.
"""

from __future__ import annotations

from pathlib import Path

from vopstore.trainer.data.formats._common import check_split, index_videos, load_json
from vopstore.trainer.data.sample import ErrorPolicy, Sample, SampleList

FILES = {"train": ("train_ids.json", "train.json"), "val1": ("val_ids.json", "val_1.json")}
SPLITS = ("train", "val1", "test")
MARKERS = ("train_ids.json", "val_ids.json", "train.json", "val_1.json")


def read(root: Path, split: str, policy: ErrorPolicy, videos_dir: Path | None = None) -> SampleList:
    """Read one ActivityNet split as one paragraph per video; see the module docstring."""
    check_split("activitynet", split, SPLITS)
    ids_name, ann_name = FILES["val1" if split == "test" else split]
    ids = load_json(root / ids_name, f"ActivityNet {ids_name}")
    ann = load_json(root / ann_name, f"ActivityNet {ann_name}")
    if not isinstance(ids, list) or not isinstance(ann, dict):
        policy.fatal(root / ids_name, None, f"expected a list of ids and {ann_name} a dict id -> {{sentences}}")
    videos = index_videos(Path(videos_dir) if videos_dir else root)
    samples = []
    for i, pseudo_id in enumerate(ids):
        sentences = _sentences(ann.get(pseudo_id) if isinstance(pseudo_id, str) else None)
        if sentences is None:
            policy.bad(root / ann_name, None, f"id [{i}] {pseudo_id!r} has no 'sentences' list in {ann_name}")
            continue
        video = videos.get(pseudo_id[2:])
        if video is None:
            policy.bad(root / ids_name, None, f"video not found: no file {pseudo_id[2:]}.<ext> under "
                                              f"{videos_dir or root} (id [{i}] {pseudo_id})")
            continue
        samples.append(Sample(video, " ".join(sentences), pseudo_id))
    return policy.result(samples)


def _sentences(entry) -> list[str] | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("sentences"), list):
        return None
    texts = [s.strip() for s in entry["sentences"] if isinstance(s, str) and s.strip()]
    return texts or None
