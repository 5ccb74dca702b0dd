"""DiDeMo paragraph-to-video: all descriptions of a video joined with spaces, first 30 s of the clip.

Expected layout (CLIP4Clip)::

    root/
      train_list.txt | val_list.txt | test_list.txt    one video file name per line
      train_data.json | val_data.json | test_data.json  [{"video", "description", "times", ...}]
      <any sub-folders>/<video file>                    named exactly as in the list

A list entry names its file exactly, whatever the extension (the released lists
hold ``.mp4``, ``.mov``, ``.avi``, ``.wmv``, ``.mts``, ``.3g2`` ... and names that
end in a bare ``.``). A re-encoded copy under another extension is used only when
no other listed name (in any split) shares its stem and exactly one video file has
it, so two annotated videos never end up on one file. Repeated list lines count once.
Videos listed without any description are skipped.

Splits: ``train``, ``val``, ``test``. Frames come from the first :data:`CLIP_SECONDS`
of each video: DiDeMo's moments are 5-second chunks of at most 30 s (longer videos
were cut there for annotation), the 0-31 s window CLIP4Clip uses.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from vopstore.trainer.data.formats._common import (
    VIDEO_EXTENSIONS, check_split, index_files, load_json, name_stem, read_lines,
)
from vopstore.trainer.data.sample import ErrorPolicy, Sample, SampleList

SPLITS = ("train", "val", "test")
MARKERS = ("train_list.txt", "test_list.txt", "train_data.json", "test_data.json")
CLIP_SECONDS = 30.0

log = logging.getLogger("vopstore.trainer.data")


def read(root: Path, split: str, policy: ErrorPolicy, videos_dir: Path | None = None,
         seconds: float | None = CLIP_SECONDS) -> SampleList:
    """Read one DiDeMo split as one paragraph per video; see the module docstring for the layout.

    Args:
        seconds: frames come from each video's first ``seconds`` (None: the whole video).
    """
    check_split("didemo", split, SPLITS)
    list_path = root / f"{split}_list.txt"
    wanted = _unique(read_lines(list_path, f"DiDeMo {split} list"), list_path)
    texts = _descriptions(root / f"{split}_data.json", policy)
    folder = Path(videos_dir) if videos_dir else root
    files = VideoFiles(index_files(folder), _listed_names(root))
    samples = []
    for line, name in wanted:
        if name not in texts:
            policy.bad(list_path, line, f"video {name} has no description in {split}_data.json")
            continue
        video = files.find(name)
        if video is None:
            policy.bad(list_path, line, f"video not found: no file named {name!r} under {folder}"
                                        f"{files.why_not(name)}")
            continue
        samples.append(Sample(video, " ".join(texts[name]), name, seconds))
    return policy.result(samples)


class VideoFiles:
    """Find the file of an annotated video name among the files of the video folder."""

    def __init__(self, files: dict[str, Path], listed: set[str]):
        self.files = files
        self.listed_stems = Counter(name_stem(n) for n in listed)
        self.by_stem: dict[str, list[Path]] = {}
        for name, path in files.items():
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                self.by_stem.setdefault(name_stem(name), []).append(path)

    def find(self, name: str) -> Path | None:
        """The file named ``name``; else its one re-encoded copy, if no other listed name shares the stem."""
        if name in self.files:
            return self.files[name]
        stem = name_stem(name)
        copies = self.by_stem.get(stem, [])
        if self.listed_stems[stem] <= 1 and len(copies) == 1:
            return copies[0]
        return None

    def why_not(self, name: str) -> str:
        """Why no re-encoded copy was taken, when there was a candidate (empty otherwise)."""
        stem = name_stem(name)
        copies = self.by_stem.get(stem, [])
        if copies and self.listed_stems[stem] > 1:
            return f" ({len(copies)} file(s) share its stem, but so does another listed video)"
        if len(copies) > 1:
            return f" ({len(copies)} files share its stem: {', '.join(p.name for p in copies[:3])})"
        return ""


def _unique(lines: list[tuple[int, str]], path: Path) -> list[tuple[int, str]]:
    """List lines without repeats (the first occurrence keeps its line number)."""
    seen: dict[str, int] = {}
    for line, name in lines:
        seen.setdefault(name, line)
    if len(seen) < len(lines):
        log.info("%s: %d repeated line(s) counted once", path, len(lines) - len(seen))
    return [(line, name) for name, line in seen.items()]


def _listed_names(root: Path) -> set[str]:
    """Every video name of every split list present: a stem shared across splits is never guessed."""
    names: set[str] = set()
    for split in SPLITS:
        path = root / f"{split}_list.txt"
        if path.is_file():
            names.update(name for _, name in read_lines(path, f"DiDeMo {split} list"))
    return names


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
        if item["description"].strip():
            texts.setdefault(item["video"], []).append(item["description"].strip())
    return texts
