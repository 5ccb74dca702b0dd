"""VoP^{F+C}: context-specific prompts in the K^s intra-frame layers, VoP^F's inter-frame layers after.

On ViT-B/32 this construction has 14,269,440 parameters (+ 9,216 frame position
embedding). The paper's Table 1 says 14.1 M, 0.15 M *less* than VoP^C, which no
construction consistent with the table's other rows reproduces; we keep the paper's
stated architecture rather than guess at a smaller CMM.
"""

from __future__ import annotations

from vopstore.prompts.configs import VopFCConfig
from vopstore.prompts.vop_c import VopC
from vopstore.prompts.vop_f import FunctionSpecific


class VopFC(FunctionSpecific, VopC):
    """VoP^{F+C}: BiLSTM + FC shared over the K^s intra-frame layers, video-level prompts after."""

    name = "vop-f+c"
    summary = "C prompts in K^s layers + inter-frame deep layers"
    config_class = VopFCConfig
    cached_prompts = ("video",)  # the intra-frame prompts are partly generated from the frames
