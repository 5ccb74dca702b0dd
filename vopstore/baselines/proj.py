"""Proj: only the final linear projection of both encoders trains (768x512 + 512x512 = 655,360 on ViT-B/32)."""

from __future__ import annotations

from vopstore.baselines.base import WeightBaseline


class Proj(WeightBaseline):
    """``visual_projection`` and ``text_projection``; per row it is a batched matmul on the pooled features."""

    name = "proj"
