"""VoP^F: function-specific video prompts: the deep layers see the whole video, so they can model time.

Layers 1..K^s attend within each frame with the usual prompts. A trainable frame
position embedding (F, D), zero-initialised, is then added to every token of frame
j, and layers K^s+1..L attend over the whole video at once:
``[CLS_1..CLS_F, 8 video-level prompts, patches_1..patches_F]``. The output is each
frame's CLS through post_layernorm and the projection, as for the other methods.

:class:`FunctionSpecific` adds this to any intra-frame method, which is how
``vop-f+p`` and ``vop-f+c`` are built.
"""

from __future__ import annotations

import torch
from torch import nn

from vopstore.prompts.base import check_frames, gather, normal_param
from vopstore.prompts.configs import VopFConfig
from vopstore.prompts.vop import Vop


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


class VopF(FunctionSpecific, Vop):
    """VoP^F: ``text``, ``visual`` (K^s, 8, 768), ``video`` (L-K^s, 8, 768), ``frame_pos`` (F, 768)."""

    name = "vop-f"
    summary = "intra-frame layers, then inter-frame attention"
    config_class = VopFConfig
    cached_prompts = ("visual", "video")  # video: row j enters inter-frame layer k_shallow + j
