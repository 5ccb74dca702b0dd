"""Adapter^ATTN and Adapter^FFN: bottleneck adapters in parallel to every attention or MLP block of both towers.

Each block of width D gets ``down`` (D -> h, with bias) and ``up`` (h -> D, with bias):
(D*h + h) + (h*D + D) = 129*D + 64 parameters for h = 64. On ViT-B/32 that is
12 * (129*768 + 64) = 1,189,632 for the vision tower plus 12 * (129*512 + 64) = 793,344
for the text tower: 1,982,976, the paper's 1.655% of its 119.8 M.

As in AdaptFormer, the branch sees the same normalised input as the sublayer it runs
beside, goes through a ReLU, is scaled by ``scale`` and added to that sublayer's output;
``up`` starts at zero, so a fresh adapter leaves every output of the backbone unchanged.
Tensors are stacked per tower over the layers: ``text.down.weight`` is (L_t, h, D_t).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from vopstore.baselines.base import Baseline
from vopstore.baselines.configs import AdapterConfig
from vopstore.baselines.forward import Overrides
from vopstore.baselines.selection import TOWERS, layer_count

PARTS = ("down.weight", "down.bias", "up.weight", "up.bias")


def adapter_shapes(layers: int, width: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """The four stacked tensors of one tower's adapters, by part name."""
    return {"down.weight": (layers, hidden, width), "down.bias": (layers, hidden),
            "up.weight": (layers, width, hidden), "up.bias": (layers, width)}


def _tower_adapters(layers: int, width: int, hidden: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
    shapes = adapter_shapes(layers, width, hidden)
    if like.device.type == "meta":  # counting shapes only
        return {part: torch.empty(shape, device="meta", dtype=like.dtype) for part, shape in shapes.items()}
    bound = 1 / math.sqrt(width)  # nn.Linear's default init of the down projection
    made = {part: torch.zeros(shape) for part, shape in shapes.items()}
    made["down.weight"].uniform_(-bound, bound)
    return {part: t.to(like.device, like.dtype) for part, t in made.items()}


class Adapter(Baseline):
    """Adapters of hidden size ``config.hidden`` beside the sublayer named by ``position``."""

    config_class = AdapterConfig
    position = ""

    @classmethod
    def initial_tensors(cls, config: AdapterConfig, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for tower, prefix in TOWERS.items():
            norm = params[f"{prefix}.encoder.layers.0.layer_norm1.weight"]
            made = _tower_adapters(layer_count(params, tower), norm.shape[0], config.hidden, norm)
            out.update({f"{tower}.{part}": t for part, t in made.items()})
        return out

    @classmethod
    def overrides(cls, config: AdapterConfig, tensors: Mapping[str, torch.Tensor]) -> Overrides:
        adapters = {tower: {part: tensors[f"{tower}.{part}"] for part in PARTS} for tower in TOWERS}
        return Overrides(adapters=adapters, position=cls.position, scale=config.scale)


class AdapterAttn(Adapter):
    """Adapter^ATTN: in parallel to multi-head self-attention."""

    name = "adapter-attn"
    position = "attn"


class AdapterFfn(Adapter):
    """Adapter^FFN: in parallel to the MLP (feed-forward) block."""

    name = "adapter-ffn"
    position = "ffn"
