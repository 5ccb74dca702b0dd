"""VoP^P: position-specific video prompts, so a frame's prompts say where it sits in the video.

Per layer and frame slot j the 8 visual prompts are 4 tokens shared by all frames
plus 4 tokens from a table indexed by j, the frame's slot among the sampled frames.
"""

from __future__ import annotations

import torch

from vopstore.prompts.base import PromptMethod, check_frames, gather, normal_param, per_frame
from vopstore.prompts.configs import VopPConfig
from vopstore.prompts.forward import VideoPrompts


class VopP(PromptMethod):
    """VoP^P: ``text``, ``shared`` (L_v, 4, 768) and ``table`` (L_v, F, 4, 768); 528,384 on ViT-B/32."""

    name = "vop-p"
    summary = "visual prompts: 4 shared + 4 per frame slot"
    config_class = VopPConfig
    cached_prompts = ("shared", "table")  # fresh at every layer, independent of the frames

    def _build_visual(self) -> None:
        cfg, width, depth = self.config, self.dims.vision_width, self.visual_depth()
        self.shared = normal_param((depth, cfg.shared_prompts, width), cfg.init_std)
        self.table = normal_param((depth, cfg.num_frames, cfg.position_prompts, width), cfg.init_std)

    @classmethod
    def video_prompts(cls, config, tensors, set_index, frames):
        check_frames(frames, config.num_frames, cls.name)
        shared = gather(tensors["shared"], set_index)  # (B, depth, 4, D)
        table = gather(tensors["table"], set_index)[:, :, :frames]  # (B, depth, F, 4, D)

        def shallow(layer, hidden):
            slots = table[:, layer].reshape(-1, *table.shape[3:])  # frame j of video b -> row b*F + j
            return torch.cat([per_frame(shared[:, layer], frames), slots], dim=1)

        n = shared.shape[2] + table.shape[3]
        return VideoPrompts(n_prompts=n, shallow=shallow, shallow_depth=shared.shape[1])
