"""The encode functions for any trainable method: a VoP prompt set, a baseline, or None (the plain backbone).

``vopstore.prompts.encode_text`` / ``encode_video`` / ``encode_frames`` resolve to these,
so the trainer and the evaluation train and score baselines through the same calls
as prompt sets. Prompt sets and None go to :mod:`vopstore.prompts.forward` unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from vopstore.baselines.base import Baseline
import vopstore.prompts.forward as forward


def encode_text(backbone: Any, input_ids: torch.Tensor, method: Any = None) -> torch.Tensor:
    """Projected text embeddings (B, D), NOT normalised; ``method=None`` is plain CLIP."""
    if isinstance(method, Baseline):
        return method.encode_text(backbone, input_ids)
    return forward.encode_text(backbone, input_ids, method)


def encode_video(backbone: Any, pixel_values: torch.Tensor, method: Any = None,
                 normalize: bool = False) -> torch.Tensor:
    """Video embeddings (B, D): the mean of the L2-normalised frame embeddings (see vopstore.prompts)."""
    if isinstance(method, Baseline):
        return method.encode_video(backbone, pixel_values, normalize)
    return forward.encode_video(backbone, pixel_values, method, normalize)


def encode_frames(backbone: Any, pixel_values: torch.Tensor, method: Any = None) -> torch.Tensor:
    """Projected per-frame embeddings (B, F, D), NOT normalised."""
    if isinstance(method, Baseline):
        return method.encode_frames(backbone, pixel_values)
    return forward.encode_frames(backbone, pixel_values, method)
