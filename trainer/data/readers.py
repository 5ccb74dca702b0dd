"""One way in to every dataset: ``read_split(fmt, root, split)`` and format auto-detection.

Each format lives in ``formats/<name>.py`` with its expected folder layout in
its docstring. ``DATASETS`` maps a format name to its module's ``read``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vopstore.errors import ConfigError, DataError, FileMissingError
from vopstore.trainer.data.formats import activitynet, didemo, generic, lsmdc, msrvtt
from vopstore.trainer.data.sample import ErrorPolicy, Sample, SampleList, log

Reader = Callable[..., SampleList]

DATASETS: dict[str, Reader] = {
    "msrvtt": msrvtt.read,
    "lsmdc": lsmdc.read,
    "didemo": didemo.read,
    "activitynet": activitynet.read,
    "generic": generic.read,
}

# Checked in this order; the generic markers come last since other datasets may hold a train.csv.
_MARKERS = {
    "msrvtt": msrvtt.MARKERS,
    "lsmdc": lsmdc.MARKERS,
    "didemo": didemo.MARKERS,
    "activitynet": activitynet.MARKERS,
    "generic": ("train.jsonl", "test.jsonl", "train.csv", "test.csv"),
}


def detect_format(root: Path | str) -> str:
    """Name the format of the dataset in ``root`` from the annotation files present.

    Raises:
        FileMissingError: ``root`` is not a folder.
        DataError: no known annotation file is there.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileMissingError(f"dataset root not found: expected a folder at {root}")
    for fmt, markers in _MARKERS.items():
        if any((root / m).is_file() for m in markers):
            return fmt
    expected = "; ".join(f"{fmt}: {', '.join(m)}" for fmt, m in _MARKERS.items())
    raise DataError(f"cannot tell the dataset format of {root}: none of the known annotation files is there "
                    f"({expected}); pass the format explicitly or fix the layout")


def read_split(fmt: str, root: Path | str, split: str, on_error: str = "skip",
               videos_dir: Path | str | None = None, **options: Any) -> SampleList:
    """Read one split of a dataset as a list of :class:`Sample`.

    Args:
        fmt: a key of :data:`DATASETS`, or ``"auto"`` to call :func:`detect_format`.
        root: the dataset folder (layouts are in each ``formats/<fmt>.py`` docstring).
        split: ``train``/``test`` everywhere; also ``train-9k``/``train-7k`` (MSR-VTT),
            ``val`` (LSMDC, DiDeMo), ``val1`` (ActivityNet), any file stem (generic).
        on_error: ``"skip"`` leaves out bad rows and missing videos and records them in
            the result's ``skipped``; ``"raise"`` stops at the first with a :class:`DataError`.
        videos_dir: where the videos are, when not in the default place under ``root``.
        options: format-specific settings, e.g. DiDeMo's ``seconds`` (30 by default; None: whole videos).

    Returns:
        A :class:`SampleList` (a list of samples with ``.skipped`` and ``.summary()``); when rows
        were skipped, one closing warning says how many and why.
    """
    root = Path(root)
    if fmt == "auto":
        fmt = detect_format(root)
    reader = DATASETS.get(fmt)
    if reader is None:
        raise ConfigError(f"unknown dataset format {fmt!r}; expected one of auto, {', '.join(DATASETS)}")
    if not root.is_dir():
        raise FileMissingError(f"dataset root not found: expected a folder at {root}")
    _check_options(fmt, reader, options)
    samples = reader(root, split, ErrorPolicy(on_error), Path(videos_dir) if videos_dir else None, **options)
    if samples.skipped:
        log.warning("%s split %r of %s: %s", fmt, split, root, samples.summary())
    if not samples:
        raise DataError(f"split {split!r} of {fmt} dataset {root} has no usable samples ({samples.summary()}); "
                        "check the layout and the video folder")
    return samples


def _check_options(fmt: str, reader: Reader, options: dict) -> None:
    accepted = set(inspect.signature(reader).parameters) - {"root", "split", "policy", "videos_dir"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"format {fmt!r} takes no option {', '.join(unknown)}; "
                          f"it takes: {', '.join(sorted(accepted)) or 'none'}")


def check_videos(samples: list[Sample], on_error: str = "skip") -> SampleList:
    """Open every distinct video and decode its first frame; drop (or raise for) the ones that fail.

    Reading a split only checks that video files exist. Run this before evaluating,
    where a clip replaced at load time would pair a caption with the wrong video; it
    costs one container open and one decoded frame per video.

    Returns:
        The samples whose video decodes, with the earlier ``skipped`` records plus one per bad video.
    """
    from vopstore.trainer.data.frames import decode_at, open_video  # torch, through vopstore.video

    policy = ErrorPolicy(on_error, list(getattr(samples, "skipped", [])))
    verdict: dict[Path, bool] = {}
    for s in samples:
        if s.video_path not in verdict:
            try:
                with open_video(s.video_path) as (container, stream, _):
                    decode_at(container, stream, np.zeros(1, np.int64), s.video_path, None)
                verdict[s.video_path] = True
            except DataError as exc:
                verdict[s.video_path] = False
                policy.bad(s.video_path, None, f"undecodable video: {exc}")
    return policy.result([s for s in samples if verdict[s.video_path]])
