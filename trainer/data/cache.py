"""An optional on-disk cache of decoded frames, so later epochs skip video decoding.

One ``.npy`` file of uint8 frames per (video path, mtime, size, sampling), so an
edited video is decoded again. Writes are atomic (temp file + rename); a file
that fails to load is treated as a miss and rewritten.

Trade-off for training: the random offset within each range cannot be cached
exactly, so the training cache keeps ``per_segment`` candidate frames evenly
spread in each range and every epoch draws one of them per range. With the
default 4 candidates a clip costs 4x the frames of the uniform cache, and the
temporal jitter is coarser than decoding afresh (4 positions per range instead
of every frame). Evaluation caches exactly the uniform frames it would decode.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


class FrameCache:
    """Decoded frames under ``root/<key[:2]>/<key>.npy``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def key(self, video: Path | str, **sampling) -> str:
        """A digest of the video's identity (resolved path, mtime, size) and the sampling parameters."""
        path = Path(video).resolve()
        st = path.stat()
        ident = json.dumps([str(path), st.st_mtime_ns, st.st_size, sorted(sampling.items())])
        return hashlib.sha256(ident.encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The cached array, or None on a miss (absent or unreadable file)."""
        path = self._file(key)
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            path.unlink(missing_ok=True)  # torn or foreign file: decode again
            return None

    def put(self, key: str, frames: np.ndarray) -> None:
        """Store ``frames`` atomically; concurrent writers of one key write the same bytes."""
        path = self._file(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(frames, dtype=np.uint8), allow_pickle=False)
        os.replace(tmp, path)

    def get_or_load(self, key: str, load) -> np.ndarray:
        """The cached array, or ``load()`` stored then returned."""
        frames = self.get(key)
        if frames is None:
            frames = load()
            self.put(key, frames)
        return frames
