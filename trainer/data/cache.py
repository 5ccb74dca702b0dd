"""An optional on-disk cache of decoded frames, so later epochs skip video decoding.

One ``.npy`` file of uint8 frames per (video path, mtime, size, sampling), so an
edited video is decoded again. Writes are atomic (a uniquely named temp file in
the same folder, then a rename), so DataLoader workers and several training
processes can share one cache: a reader sees a whole file or none, and two
writers of one key write the same bytes. A file that fails to load is treated
as a miss and rewritten. No fsync (``durable=False``): after a crash a torn entry is only a miss.

Trade-off for ``random`` training sampling: the random offset within each range cannot be cached
exactly, so the training cache keeps ``per_segment`` candidate frames evenly
spread in each range and every epoch draws one of them per range. With the
default 4 candidates a clip costs 4x the frames of the uniform cache, and the
temporal jitter is coarser than decoding afresh (4 positions per range instead
of every frame). Evaluation and ``uniform`` training (the default) cache exactly
the uniform frames they would decode, under the same key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vopstore.core import atomic_write, canonical_json, sha256_bytes


class FrameCache:
    """Decoded frames under ``root/<key[:2]>/<key>.npy``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def key(self, video: Path | str, **sampling) -> str:
        """A digest of the video's identity (resolved path, mtime, size) and the sampling parameters."""
        path = Path(video).resolve()
        st = path.stat()
        return sha256_bytes(canonical_json([str(path), st.st_mtime_ns, st.st_size, sampling]).encode("utf-8"))

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
        with atomic_write(self._file(key), durable=False) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(frames, dtype=np.uint8), allow_pickle=False)

    def get_or_load(self, key: str, load) -> np.ndarray:
        """The cached array, or ``load()`` stored then returned."""
        frames = self.get(key)
        if frames is None:
            frames = load()
            self.put(key, frames)
        return frames
