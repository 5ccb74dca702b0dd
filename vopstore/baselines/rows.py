"""Mixed-version batches of the co-batchable baselines (bias, proj, adapters) on the shared backbone.

The same bank contract as vopstore.prompts: versions of ONE baseline and ONE config
are stacked along a leading set dimension (:func:`~vopstore.baselines.registry.stack_baselines`),
and row b of a batch uses set ``set_index[b]``. Nothing of the backbone is modified, so
rows of prompt sets (or of the plain backbone) can run beside these in the same process.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from vopstore.baselines.base import Baseline, as_video
from vopstore.baselines.forward import Overrides, Rows, frame_features, text_features
from vopstore.errors import ConfigError
from vopstore.prompts.forward import pool_frames


def row_overrides(method_cls: type[Baseline], config: Any, stacked: Mapping[str, torch.Tensor],
                  set_index: torch.Tensor) -> Overrides:
    """The forward's overrides for a batch whose row b uses set ``set_index[b]`` of ``stacked`` (S, ...)."""
    if not method_cls.co_batched():
        raise ConfigError(f"{method_cls.name} replaces weights that every row goes through; serve it as its own "
                          "model, not per row")
    overrides = method_cls.overrides(config, stacked)
    overrides.rows = Rows(set_index)
    return overrides


def encode_text_rows(backbone: Any, input_ids: torch.Tensor, method_cls: type[Baseline], config: Any,
                     stacked: Mapping[str, torch.Tensor], set_index: torch.Tensor) -> torch.Tensor:
    """Text embeddings (B, D), NOT normalised, where row b uses set ``set_index[b]``."""
    return text_features(backbone, input_ids, row_overrides(method_cls, config, stacked, set_index))


def encode_frames_rows(backbone: Any, pixel_values: torch.Tensor, method_cls: type[Baseline], config: Any,
                       stacked: Mapping[str, torch.Tensor], set_index: torch.Tensor) -> torch.Tensor:
    """Per-frame embeddings (B, F, D), NOT normalised, where video b uses set ``set_index[b]``."""
    return frame_features(backbone, as_video(pixel_values), row_overrides(method_cls, config, stacked, set_index))


def encode_video_rows(backbone: Any, pixel_values: torch.Tensor, method_cls: type[Baseline], config: Any,
                      stacked: Mapping[str, torch.Tensor], set_index: torch.Tensor,
                      normalize: bool = False) -> torch.Tensor:
    """Video embeddings (B, D): the mean of the L2-normalised frame embeddings, video b with set ``set_index[b]``."""
    frames = encode_frames_rows(backbone, pixel_values, method_cls, config, stacked, set_index)
    return pool_frames(frames, normalize)
