"""Bias (BitFit / TinyTL): only the bias terms train, linear and LayerNorm ones (171,008 on ViT-B/32)."""

from __future__ import annotations

from vopstore.baselines.base import WeightBaseline


class Bias(WeightBaseline):
    """Every ``*.bias`` parameter of the backbone; per row it is an add, so sets can share a batch."""

    name = "bias"
