"""Partial: the last layer of both encoders trains (10,242,816 on ViT-B/32).

"Last layer" is taken as the last transformer block plus the LayerNorm that follows it
(text ``final_layer_norm``, vision ``post_layernorm``): 7,087,872 + 1,536 on the vision side,
3,152,384 + 1,024 on the text side. The projections are not included (they are ``proj``).
"""

from __future__ import annotations

from vopstore.baselines.base import WeightBaseline


class Partial(WeightBaseline):
    """The last block + final LayerNorm of each tower; every row goes through them, so it is its own model."""

    name = "partial"
