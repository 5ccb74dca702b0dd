"""Video-text data for VoP training: dataset readers, the synthetic task, frames, the Dataset.

Names are imported on first use, so reading annotations or rendering the
synthetic task does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Sample": "sample", "SampleList": "sample", "Skipped": "sample", "group_by_video": "sample",
    "DATASETS": "readers", "read_split": "readers", "detect_format": "readers",
    "check_videos": "readers",
    "ClipSpec": "synthetic", "SyntheticTask": "synthetic", "caption": "synthetic",
    "generate_synthetic_task": "synthetic", "render_clip": "synthetic", "sample_static_pairs": "synthetic",
    "static_caption": "synthetic", "write_video": "mp4",
    "FrameSampler": "frames", "load_frames": "frames", "frame_indices": "frames",
    "preprocess_frames": "transforms", "FrameCache": "cache",
    "VideoTextDataset": "dataset", "VideoTextCollate": "dataset",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vopstore.trainer.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
