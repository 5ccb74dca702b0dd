"""What every reader returns: samples, plus a record of the rows it skipped.

A reader never silently drops data. Each bad row (malformed line, missing
video, empty caption) goes through :class:`ErrorPolicy`: with ``on_error="raise"``
it becomes a :class:`~vopstore.errors.DataError` naming the file and line; with
``on_error="skip"`` it is logged and counted in :attr:`SampleList.skipped`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vopstore.errors import ConfigError, DataError

log = logging.getLogger("vopstore.trainer.data")

ON_ERROR = ("skip", "raise")


@dataclass(frozen=True)
class Sample:
    """One (video, caption) pair. Paragraph datasets put the joined paragraph in ``caption``.

    ``end_s`` limits the frames to the clip's first seconds (DiDeMo's annotations cover
    the first 30 s only); None uses the whole clip.
    """

    video_path: Path
    caption: str
    video_id: str
    end_s: float | None = None


@dataclass(frozen=True)
class Skipped:
    """One row or video left out, with where it came from and why."""

    source: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.reason}"


class SampleList(list):
    """A ``list[Sample]`` that also carries the :class:`Skipped` records of its reader."""

    def __init__(self, samples=(), skipped=()):
        super().__init__(samples)
        self.skipped: list[Skipped] = list(skipped)

    def summary(self) -> str:
        """One line for logs and the CLI: how many samples were kept and skipped, and why."""
        why = "; ".join(f"{n}x {r}" for r, n in list(self.reasons().items())[:3])
        return f"{len(self)} samples, {len(self.skipped)} skipped" + (f" ({why})" if why else "")

    def reasons(self) -> dict[str, int]:
        """Skips per kind of reason (the text before the first colon), most frequent first."""
        return dict(Counter(s.reason.split(":")[0] for s in self.skipped).most_common())

    def require_complete(self, what: str) -> None:
        """Raise :class:`DataError` if any row was skipped (``--strict``): the summary and the first skip."""
        if self.skipped:
            raise DataError(f"--strict: {what} skipped {len(self.skipped)} item(s) ({self.summary()}); first: "
                            f"{self.skipped[0]}; fix the data, or drop --strict to train on the rest")


@dataclass
class ErrorPolicy:
    """Raise or record a bad row, as the user chose with ``on_error``."""

    on_error: str = "skip"
    skipped: list[Skipped] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_on_error(self.on_error)

    def bad(self, source: Path | str, line: int | None, reason: str) -> None:
        """Handle one bad row: raise :class:`DataError` or log and count it."""
        record = Skipped(str(source), line, reason)
        if self.on_error == "raise":
            raise DataError(f"{record} (pass on_error='skip' to leave such rows out and count them)")
        log.warning("skipping %s", record)
        self.skipped.append(record)

    def fatal(self, source: Path | str, line: int | None, reason: str) -> None:
        """A whole-file problem: always raise, since no row of the file can be trusted."""
        raise DataError(f"{Skipped(str(source), line, reason)}")

    def result(self, samples: list[Sample]) -> SampleList:
        return SampleList(samples, self.skipped)


def skip_report(samples: list[Sample]) -> dict:
    """What a version records about one split: ``{"kept", "skipped", "reasons": {reason: count}}``."""
    listed = samples if isinstance(samples, SampleList) else SampleList(samples)
    return {"kept": len(listed), "skipped": len(listed.skipped), "reasons": listed.reasons()}


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")


def group_by_video(samples: list[Sample]) -> tuple[list[Sample], list[int]]:
    """Unique videos (first sample of each, in order) and, per sample, the index of its video.

    This is the evaluation layout: encode each video once, every caption once, and
    pass ``text_to_video`` to :func:`vopstore.trainer.metrics.retrieval_metrics`.
    """
    index: dict[Path, int] = {}
    videos: list[Sample] = []
    text_to_video: list[int] = []
    for s in samples:
        if s.video_path not in index:
            index[s.video_path] = len(videos)
            videos.append(s)
        text_to_video.append(index[s.video_path])
    return videos, text_to_video
