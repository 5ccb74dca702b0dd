"""Which frames of a clip to use, and decoding just those with PyAV.

Sampling follows X-Pool: the clip's N frames are split into F equal index
ranges ``[a, b)``. ``uniform`` (the paper's rule, and always the rule of
evaluation) takes the middle frame ``(a + b - 1) // 2`` of each range;
``random`` (a training option) takes a random frame inside each range. A clip
shorter than F frames gives all its frames, padded by repeating the last one.
A clip may be cut to its first ``end_s`` seconds first (DiDeMo's 30 s window).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from vopstore.errors import ConfigError, DataError
from vopstore.trainer.config import TRAIN_SAMPLINGS as SAMPLINGS  # validated there before any decoding
from vopstore.video import frame_count, rgb_array, segment_bounds, uniform_indices  # one rule for training and serving

# What a version's config records as its evaluation rule (evaluation never samples at random).
EVAL_SAMPLING = "uniform: frame (a + b - 1) // 2 of each of num_frames equal ranges [a, b)"


# Frame + slice threads when this process decodes alone; one thread in a DataLoader worker, where the
# workers are the parallelism and threads of their own would only oversubscribe the cores.
_DECODE = {"threads": 0}  # 0: FFmpeg picks (one per core)


def decode_in_one_thread(worker_id: int = 0) -> None:
    """Make this process decode with one thread (a DataLoader ``worker_init_fn``)."""
    _DECODE["threads"] = 1


def check_sampling(sampling: str) -> str:
    """Return ``sampling`` if it is a known rule, else raise :class:`ConfigError`."""
    if sampling not in SAMPLINGS:
        raise ConfigError(f"frame sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    return sampling


def candidate_indices(n_total: int, num_frames: int, per_segment: int) -> np.ndarray:
    """(num_frames, per_segment) frame indices, evenly spread inside each range (padded with the last row).

    ``per_segment=1`` is the uniform (middle-frame) sampling; an odd ``per_segment``
    includes the middle frame ``(a + b - 1) // 2`` at column ``per_segment // 2``.
    """
    bounds = segment_bounds(n_total, num_frames)
    a, length = bounds[:, :1], bounds[:, 1:] - bounds[:, :1]
    k = np.arange(per_segment)[None, :]
    idx = a + (length * (2 * k + 1) - 1) // (2 * per_segment)
    pad = np.repeat(idx[-1:], num_frames - len(idx), axis=0)
    return np.concatenate([idx, pad], axis=0)


def frame_indices(n_total: int, num_frames: int, sampling: str = "uniform",
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """``num_frames`` indices: the middle of each range (``uniform``) or a random frame in each (``random``)."""
    if check_sampling(sampling) == "uniform":
        return np.asarray(uniform_indices(n_total, num_frames), dtype=np.int64)
    bounds = segment_bounds(n_total, num_frames)
    rng = rng if rng is not None else np.random.default_rng()
    idx = rng.integers(bounds[:, 0], np.maximum(bounds[:, 1], bounds[:, 0] + 1))
    return np.concatenate([idx, np.repeat(idx[-1:], num_frames - len(idx))])


@dataclass(frozen=True)
class FrameSampler:
    """How many frames to take and how (the decoding half of the data pipeline).

    Attributes:
        num_frames: frames per clip (12 in the paper).
        sampling: ``uniform`` (middle of each range) or ``random`` (a random frame in each).
        short_side: resize while decoding so the shorter side is this many pixels
            (None keeps the video's size; smaller frames make the cache smaller).
        end_s: use only the first ``end_s`` seconds of each clip (None: all of it).
    """

    num_frames: int = 12
    sampling: str = "uniform"
    short_side: int | None = None
    end_s: float | None = None

    def __post_init__(self) -> None:
        check_sampling(self.sampling)
        if self.num_frames < 1 or (self.short_side is not None and self.short_side < 1):
            raise ConfigError(f"num_frames and short_side must be >= 1, got {self.num_frames}, {self.short_side}")
        if self.end_s is not None and not self.end_s > 0:
            raise ConfigError(f"end_s must be > 0 seconds (or None for the whole clip), got {self.end_s}")

    def __call__(self, path: Path | str, rng: np.random.Generator | None = None) -> np.ndarray:
        return load_frames(path, self.num_frames, self.sampling, rng, self.short_side, self.end_s)


def load_frames(path: Path | str, num_frames: int = 12, sampling: str = "uniform",
                rng: np.random.Generator | None = None, short_side: int | None = None,
                end_s: float | None = None) -> np.ndarray:
    """Decode ``num_frames`` frames of a video (its first ``end_s`` seconds) as a (F, H, W, 3) uint8 array.

    Raises:
        DataError: the file is missing, not a video, or has no decodable frame.
    """
    check_sampling(sampling)
    with open_video(path) as (container, stream, n_total):
        limit = frames_within(stream, end_s)
        if n_total == 0:
            frames = decode_all(container, stream, path, short_side, limit)
            return frames[frame_indices(len(frames), num_frames, sampling, rng)]
        n = min(n_total, limit) if limit else n_total
        return decode_at(container, stream, frame_indices(n, num_frames, sampling, rng), path, short_side)


def load_candidates(path: Path | str, num_frames: int, per_segment: int,
                    short_side: int | None = None, end_s: float | None = None) -> np.ndarray:
    """Decode (F, per_segment, H, W, 3) candidate frames: what the frame cache keeps for random sampling."""
    with open_video(path) as (container, stream, n_total):
        limit = frames_within(stream, end_s)
        if n_total == 0:
            frames = decode_all(container, stream, path, short_side, limit)
            return frames[candidate_indices(len(frames), num_frames, per_segment)]
        idx = candidate_indices(min(n_total, limit) if limit else n_total, num_frames, per_segment)
        flat = decode_at(container, stream, idx.reshape(-1), path, short_side)
        return flat.reshape(idx.shape + flat.shape[1:])


def frames_within(stream, end_s: float | None) -> int | None:
    """How many frames the first ``end_s`` seconds hold (None: no limit, or the rate is unknown)."""
    rate = stream.average_rate or stream.guessed_rate
    if end_s is None or not rate:
        return None
    return max(1, math.ceil(end_s * float(rate) - 1e-6))


@contextmanager
def open_video(path: Path | str) -> Iterator[tuple[object, object, int]]:
    """Yield (container, video stream, frame count), closing the file after; :class:`DataError` if unusable."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot decode video {path}: {_why(exc)}; re-encode or remove it") from None
    try:
        if not container.streams.video:
            raise DataError(f"cannot decode video {path}: no video stream; re-encode or remove it")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = _DECODE["threads"]
        yield container, stream, frame_count(stream, container)
    finally:
        container.close()


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__


def decode_at(container, stream, indices: np.ndarray, path: Path | str, short_side: int | None) -> np.ndarray:
    """Decode once from the start, keeping only the frames at ``indices`` (in that order).

    Indices past the real end (a header that over-counts) get the last decoded frame,
    the same padding a short video gets.
    """
    wanted = set(int(i) for i in indices)
    kept, last = _decode(container, stream, path, lambda i: i in wanted, max(wanted), short_side)
    if any(int(i) not in kept for i in indices):
        final = _to_rgb(last, short_side)
        return np.stack([kept.get(int(i), final) for i in indices])
    return np.stack([kept[int(i)] for i in indices])


def decode_all(container, stream, path: Path | str, short_side: int | None, limit: int | None = None) -> np.ndarray:
    """Every frame (the first ``limit`` ones), for a stream whose header gives no frame count or duration."""
    stop = None if limit is None else limit - 1
    kept, _ = _decode(container, stream, path, lambda i: True, stop, short_side)
    return np.stack([kept[i] for i in sorted(kept)])


def _decode(container, stream, path, keep, stop: int | None, short_side: int | None):
    """Run the decoder; return ({index: rgb array} for kept frames, last decoded av frame)."""
    import av

    kept: dict[int, np.ndarray] = {}
    last = None
    try:
        for i, frame in enumerate(container.decode(stream)):
            last = frame
            if keep(i):
                kept[i] = _to_rgb(frame, short_side)
            if stop is not None and i >= stop:
                break
    except (av.FFmpegError, ValueError) as exc:
        if last is None:  # a damaged tail is tolerated, a file with no frame is not
            raise DataError(f"cannot decode video {path}: {_why(exc)}; re-encode or remove it") from None
    if last is None:
        raise DataError(f"cannot decode video {path}: no frame could be decoded; re-encode or remove it")
    return kept, last


def _to_rgb(frame, short_side: int | None) -> np.ndarray:
    if short_side is None:
        return rgb_array(frame)
    w, h = frame.width, frame.height
    scale = short_side / min(w, h)
    return rgb_array(frame, max(2, round(w * scale)), max(2, round(h * scale)))
