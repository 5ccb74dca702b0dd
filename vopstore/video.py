"""Clips to pixel values for serving: uniform frames decoded with PyAV, CLIP eval preprocessing.

The trainer has a richer pipeline (random offsets, frame cache); ``vopstore`` must
not import ``vopstore.trainer``, so the rules both share live here and the trainer
imports them (:func:`segment_bounds`, :func:`frame_count`, :func:`resize_shorter`,
:func:`center_crop`): ``num_frames`` frames, the middle one of each of
``num_frames`` equal ranges (a shorter clip repeats its last frame; the frame count
is the header's, else duration x rate, else every frame is decoded), shorter side
resized to the backbone's ``resize_size`` (bicubic, antialiased), centre crop to
``image_size``, normalised with the backbone's mean and std.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vopstore.errors import DataError

NUM_FRAMES = 12


def segment_bounds(n_total: int, num_frames: int) -> np.ndarray:
    """(S, 2) array of [start, end) index ranges, S = min(num_frames, n_total)."""
    edges = np.linspace(0, n_total, min(num_frames, n_total) + 1).astype(np.int64)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def uniform_indices(total: int, num_frames: int) -> list[int]:
    """The middle frame of each of ``num_frames`` equal index ranges, padded with the last index.

    The middle of ``[a, b)`` is ``(a + b - 1) // 2``, X-Pool's rule (the lower middle of an even
    range), so embeddings match the harness the paper's numbers come from.
    """
    bounds = segment_bounds(total, num_frames)
    idx = [int((a + b - 1) // 2) for a, b in bounds]
    return idx + [idx[-1]] * (num_frames - len(idx))


def frame_count(stream: Any, container: Any) -> int:
    """Frames in the stream: the header count, else duration x rate; 0 if unknown (decode all)."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        return max(1, int(round(float(stream.duration * stream.time_base * rate))))
    if container.duration and rate:
        return max(1, int(round(container.duration / 1_000_000 * float(rate))))
    return 0


def rgb_array(frame: Any, width: int | None = None, height: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded PyAV frame, scaled to ``width`` x ``height`` if given.

    The scaler runs in the calling thread: once one conversion in a process has used FFmpeg's
    automatic scaler threads, a process forked from it afterwards (a DataLoader worker) hangs
    in its first conversion, waiting on threads that fork did not copy (PyAV 18, FFmpeg 8).
    """
    return frame.to_ndarray(format="rgb24", width=width, height=height, threads=1)


def decode_frames(path: str | os.PathLike, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB frames of the clip at ``path``.

    Raises:
        DataError: missing file, no video stream, or no decodable frame.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(f"video not found: {path}; pass existing video files or a (B, F, 3, H, W) tensor")
    try:
        with av.open(str(path)) as container:
            frames = [rgb_array(f) for f in _decode(container, num_frames)]
    except (av.FFmpegError, IndexError, ValueError) as exc:
        raise DataError(f"cannot decode video {path} ({type(exc).__name__}: {exc}); re-encode it") from None
    if not frames:
        raise DataError(f"cannot decode video {path}: no frame could be decoded; re-encode it")
    return np.stack(frames)


def _decode(container: Any, num_frames: int) -> list:
    """Decode once from the start, stopping after the last wanted frame when the count is known."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    total = frame_count(stream, container)
    if total == 0:  # no frame count nor duration: decode everything, then pick
        every = list(container.decode(stream))
        return [every[i] for i in uniform_indices(len(every), num_frames)] if every else []
    wanted = uniform_indices(total, num_frames)
    kept, last = {}, None
    for i, frame in enumerate(container.decode(stream)):
        last = frame
        if i in wanted:
            kept[i] = frame
        if i >= wanted[-1]:
            break
    return [kept.get(i, last) for i in wanted] if last is not None else []  # an over-counting header pads


def preprocess(frames: np.ndarray, backbone: Any) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, S, S) float: resize shorter side, centre crop, normalise."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)
    x = resize_shorter(x, backbone.resize_size)
    x = center_crop(x, backbone.image_size).clamp_(0, 1)
    mean = torch.tensor(backbone.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


def resize_shorter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic antialiased resize so the shorter side is ``size`` (torchvision Resize(int) sizing)."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    new = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    return F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Central ``size`` x ``size`` window (torchvision's rounding of the offsets)."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise DataError(f"frames of {h}x{w} cannot be centre-cropped to {size}x{size}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def load_videos(paths: Sequence[str | os.PathLike], backbone: Any, num_frames: int = NUM_FRAMES) -> torch.Tensor:
    """(B, F, 3, S, S) pixel values for the clips at ``paths``, ready for ``encode_video``."""
    return torch.stack([preprocess(decode_frames(p, num_frames), backbone) for p in paths])
