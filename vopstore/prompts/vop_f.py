"""VoP^F: function-specific video prompts (paper §3.3 Eq. 9, spec §4).

Layers 1..K^s attend within each frame with the usual prompts. A trainable frame
position embedding (F, D), zero-initialised, is then added to every token of frame
j, and layers K^s+1..L attend over the whole video at once:
``[CLS_1..CLS_F, 8 video-level prompts, patches_1..patches_F]``. The output is each
frame's CLS through post_layernorm and the projection, as for the other methods.

:class:`FunctionSpecific` adds this to any intra-frame method, which is how
``vop-f+p`` and ``vop-f+c`` are built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vopstore.errors import ConfigError
from vopstore.prompts.base import Dims, gather, normal_param
from vopstore.prompts.vop import Vop, VopConfig
from vopstore.prompts.vop_p import check_frames


@dataclass(frozen=True)
class FunctionFields:
    """The VoP^F settings mixed into a config.

    Attributes:
        k_shallow: intra-frame layers K^s (paper: 8); the remaining layers are inter-frame.
        video_prompts: video-level prompt tokens per inter-frame layer (8).
        num_frames: rows of the frame position embedding (the most frames a video may have).
    """

    k_shallow: int = 8
    video_prompts: int = 8
    num_frames: int = 12

    def validate_for(self, dims: Dims) -> None:
        super().validate_for(dims)
        if not 1 <= self.k_shallow < dims.vision_layers:
            raise ConfigError(f"k_shallow must be between 1 and {dims.vision_layers - 1} "
                              f"(the backbone has {dims.vision_layers} vision layers), got {self.k_shallow}")
        if getattr(self, "visual_depth", None) is not None and self.visual_depth > self.k_shallow:
            raise ConfigError(f"visual_depth ({self.visual_depth}) cannot exceed k_shallow ({self.k_shallow})")
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")


class FunctionSpecific:
    """Mixin: intra-frame prompts of the base method in layers < K^s, inter-frame layers after."""

    uncounted = ("frame_pos",)  # the paper's Table 1 lists VoP^F at exactly VoP's count

    def intra_layers(self) -> int:
        return self.config.k_shallow

    def _build_visual(self) -> None:
        super()._build_visual()
        cfg, width = self.config, self.dims.vision_width
        deep = self.dims.vision_layers - cfg.k_shallow
        self.video = normal_param((deep, cfg.video_prompts, width), cfg.init_std)
        self.frame_pos = nn.Parameter(torch.zeros(cfg.num_frames, width))

    @classmethod
    def video_prompts(cls, config, tensors, set_index, frames):
        check_frames(frames, config.num_frames, cls.name)
        prompts = super().video_prompts(config, tensors, set_index, frames)
        prompts.shallow_depth = min(prompts.shallow_depth, config.k_shallow)
        prompts.k_shallow = config.k_shallow
        prompts.video = gather(tensors["video"], set_index)
        prompts.frame_pos = gather(tensors["frame_pos"], set_index)[:, :frames]
        return prompts


@dataclass(frozen=True)
class VopFConfig(FunctionFields, VopConfig):
    """VoP^F settings: VoP's plus ``k_shallow``, ``video_prompts``, ``num_frames``."""


class VopF(FunctionSpecific, Vop):
    """VoP^F: ``text``, ``visual`` (K^s, 8, 768), ``video`` (L-K^s, 8, 768), ``frame_pos`` (F, 768)."""

    name = "vop-f"
    summary = "intra-frame layers, then inter-frame attention"
    config_class = VopFConfig


