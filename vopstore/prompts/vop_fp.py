"""VoP^{F+P}: position-specific prompts in the K^s intra-frame layers, VoP^F's inter-frame layers after."""

from __future__ import annotations

from vopstore.prompts.configs import VopFPConfig
from vopstore.prompts.vop_f import FunctionSpecific
from vopstore.prompts.vop_p import VopP


class VopFP(FunctionSpecific, VopP):
    """VoP^{F+P}: 393,216 parameters on ViT-B/32 (+ 9,216 frame position embedding)."""

    name = "vop-f+p"
    summary = "P prompts in K^s layers + inter-frame deep layers"
    config_class = VopFPConfig
    cached_prompts = ("shared", "table", "video")
