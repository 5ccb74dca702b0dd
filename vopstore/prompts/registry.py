"""The one registry of prompt methods: name -> class, and what is built or counted by name.

The method modules never import this one, so there is no loop: reading a prompt set
back from its file (name -> class -> tensors) is :mod:`vopstore.prompts.io`, above
this module; writing needs only the file format (``PromptMethod.save``).
"""

from __future__ import annotations

from typing import Any

import torch

from vopstore.baselines.configs import is_baseline  # baselines are methods too (torch-free)
from vopstore.baselines.registry import build_baseline
from vopstore.errors import UnknownMethodError
from vopstore.prompts.base import PromptMethod
from vopstore.prompts.configs import Dims
from vopstore.prompts.vop import Vop
from vopstore.prompts.vop_c import VopC
from vopstore.prompts.vop_f import VopF
from vopstore.prompts.vop_fc import VopFC
from vopstore.prompts.vop_fp import VopFP
from vopstore.prompts.vop_p import VopP

METHODS: dict[str, type[PromptMethod]] = {cls.name: cls for cls in (Vop, VopP, VopC, VopF, VopFP, VopFC)}

# CLIP ViT-B/32 (CLIPConfig() defaults): what `vopstore methods` counts against, without loading weights.
VIT_B32_DIMS = Dims(text_layers=12, text_width=512, vision_layers=12, vision_width=768)
VIT_B32_PARAMS = 151_277_313
# The paper's "Full" denominator (Table 1) as printed. The paper does not say which parameters it counts
# (ViT-B/32 has VIT_B32_PARAMS), so `paper_share` divides by it to reproduce the paper's percentages and
# `share` divides by the real count.
PAPER_FULL_PARAMS = 119_800_000


def get_method(name: str) -> type[PromptMethod]:
    """The method class registered under ``name``; raises UnknownMethodError."""
    try:
        return METHODS[name]
    except KeyError:
        if is_baseline(name):  # a caller that builds prompt sets only was handed a baseline's name
            raise UnknownMethodError(f"{name!r} is a baseline, not a prompt method; build it with "
                                     "vopstore.baselines (vopstore.baselines.registry.method_class)") from None
        raise UnknownMethodError(f"unknown prompt method {name!r}; choose one of {', '.join(METHODS)}") from None


def construct(name: str, dims: Dims, seed: int, config: dict, strict: bool = True) -> PromptMethod:
    """Method ``name`` with ``config`` for a backbone of ``dims``, initialised from ``seed`` (on the CPU).

    ``strict=False`` drops unknown settings with a warning (a file written by a newer vopstore).
    """
    cls = get_method(name)
    cfg = cls.config_class.from_dict(config, strict=strict)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        return cls(cfg, dims)


def build_method(name: str, backbone: Any, seed: int = 0, **config: Any) -> PromptMethod:
    """A freshly initialised prompt set for ``backbone`` (on its device and dtype).

    Args:
        name: one of ``METHODS`` (``vop``, ``vop-p``, ``vop-c``, ``vop-f``, ``vop-f+p``, ``vop-f+c``) or a
            baseline (:mod:`vopstore.baselines`), which its own registry builds.
        backbone: a :class:`vopstore.backbone.Backbone`.
        seed: initialisation seed.
        **config: fields of the method's config dataclass (e.g. ``k_shallow=8``).

    Raises:
        UnknownMethodError: no such method.
        ConfigError: an unknown or invalid setting.
    """
    if is_baseline(name):  # full, bias, proj, partial, adapter-attn, adapter-ffn
        return build_baseline(name, backbone, seed=seed, **config)
    method = construct(name, Dims.from_clip_config(backbone.model.config), seed, config)
    return method.to(device=backbone.device, dtype=backbone.dtype)


def build_meta(name: str, dims: Dims = VIT_B32_DIMS, **config: Any) -> PromptMethod:
    """The method's modules on the meta device: shapes and counts, no memory, no init cost."""
    cls = get_method(name)
    with torch.device("meta"):
        return cls(cls.config_class.from_dict(config), dims)


def method_table(dims: Dims = VIT_B32_DIMS, backbone_params: int = VIT_B32_PARAMS) -> list[dict]:
    """One row per method with its parameter counts on ``dims`` (ViT-B/32 by default), built on meta."""
    rows = []
    for name, cls in METHODS.items():
        method = build_meta(name, dims)
        trainable, paper = method.trainable_params(), method.paper_params()
        rows.append({"name": name, "trainable_params": trainable, "paper_params": paper,
                     "uncounted_params": trainable - paper, "uncounted": list(cls.uncounted),
                     "share": trainable / backbone_params, "paper_share": paper / PAPER_FULL_PARAMS,
                     "backbone_params": backbone_params, "summary": cls.summary})
    return rows
