"""Write uint8 frames to a real video file with PyAV (used by the synthetic task and test fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vopstore.core import atomic_write


def pick_codec() -> str:
    """libx264 when this PyAV build has it, else mpeg4 (every FFmpeg build has that)."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(path: Path | str, frames: np.ndarray, fps: int = 8, codec: str | None = None) -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames as yuv420p video at ``path``, atomically.

    H and W must be even (yuv420p). The container follows the suffix (.mp4, .avi, .webm...).
    """
    import av

    path = Path(path)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames with even H and W, got {frames.shape}")
    codec = codec or pick_codec()
    # keep_suffix: PyAV picks the container from the file name's suffix
    with atomic_write(path, keep_suffix=True) as tmp, av.open(str(tmp), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            # one thread: the same frames give the same bytes; crf 18 keeps small shapes' colours
            stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))
    return path
