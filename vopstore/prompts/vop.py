"""VoP: deep text prompts and deep visual prompts, the same for every frame of a video.

Each prompted vision layer gets fresh learned tokens inserted after every frame's CLS;
a frame attends to its own patches and these tokens only.
"""

from __future__ import annotations

from vopstore.prompts.base import PromptMethod, gather, normal_param, per_frame
from vopstore.prompts.configs import VopConfig
from vopstore.prompts.forward import VideoPrompts


class Vop(PromptMethod):
    """VoP: ``text`` (L_t, 8, 512) and ``visual`` (L_v, 8, 768) learned prompts; 122,880 on ViT-B/32."""

    name = "vop"
    summary = "deep text + visual prompts, shared by all frames"
    config_class = VopConfig
    # prompt tensors whose row i enters vision layer i fresh, the same whatever the frames (keys/values cacheable)
    cached_prompts = ("visual",)

    def _build_visual(self) -> None:
        shape = (self.visual_depth(), self.config.visual_prompts, self.dims.vision_width)
        self.visual = normal_param(shape, self.config.init_std)

    @classmethod
    def video_prompts(cls, config, tensors, set_index, frames):
        visual = gather(tensors["visual"], set_index)  # (B, depth, P, D)

        def shallow(layer, hidden):
            return per_frame(visual[:, layer], frames)

        return VideoPrompts(n_prompts=visual.shape[2], shallow=shallow, shallow_depth=visual.shape[1])
