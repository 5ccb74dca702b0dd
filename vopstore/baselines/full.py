"""Full: every backbone weight trains (151,277,312 on ViT-B/32); a version is a complete fine-tuned CLIP."""

from __future__ import annotations

from vopstore.baselines.base import WeightBaseline


class Full(WeightBaseline):
    """Full fine-tuning. The module holds the one trainable copy of the weights; the backbone stays frozen."""

    name = "full"
    # Stored, so that a version is a complete CLIP, but not trained: the recipe keeps the backbone's
    # temperature for every method, and a trainable parameter outside the loss would stall DDP's reduction.
    frozen = ("logit_scale",)
