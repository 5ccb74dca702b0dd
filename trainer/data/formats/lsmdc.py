"""LSMDC (LSMDC16 retrieval): every (clip, sentence) row is one pair; 1,000-clip public test.

Expected layout (CLIP4Clip)::

    root/
      LSMDC16_annos_training.csv              tab-separated, no header, 6 fields:
      LSMDC16_annos_val.csv                     clip_id, start_aligned, end_aligned,
      LSMDC16_challenge_1000_publictect.csv     start_extracted, end_extracted, sentence
      <any sub-folders>/{clip_id}.avi|.mp4|...  found by walking root; X-Pool's
                                                {movie}/{clip_id}.avi layout is one case

Splits: ``train``, ``val``, ``test``. Duplicate clip ids in train are all kept
(CLIP4Clip), not collapsed to the last caption (X-Pool).
"""

from __future__ import annotations

from pathlib import Path

from vopstore.trainer.data.formats._common import check_split, index_videos, read_lines
from vopstore.trainer.data.sample import ErrorPolicy, Sample, SampleList

FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}
MARKERS = tuple(FILES.values())
N_FIELDS = 6


def read(root: Path, split: str, policy: ErrorPolicy, videos_dir: Path | None = None) -> SampleList:
    """Read one LSMDC split; see the module docstring for the layout."""
    check_split("lsmdc", split, tuple(FILES))
    path = root / FILES[split]
    rows = read_lines(path, f"LSMDC {split} annotations")
    videos = index_videos(Path(videos_dir) if videos_dir else root)
    samples = []
    for line, text in rows:
        fields = text.split("\t")
        if len(fields) != N_FIELDS or not fields[0].strip() or not fields[5].strip():
            policy.bad(path, line, f"malformed row: expected {N_FIELDS} tab-separated fields "
                                   f"(clip_id ... sentence), got {len(fields)}")
            continue
        clip_id, sentence = fields[0].strip(), fields[5].strip()
        video = videos.get(clip_id)
        if video is None:
            policy.bad(path, line, f"video not found: no file named {clip_id}.<ext> under {videos_dir or root}")
            continue
        samples.append(Sample(video, sentence, clip_id))
    return policy.result(samples)
