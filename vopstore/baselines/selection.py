"""Which of CLIP's parameters each weight baseline trains, decided from parameter names alone (no torch).

The names are transformers' ``CLIPModel`` parameter names, which are also the tensor
names in a stored weight baseline, so a file says exactly which weights it replaces.

* ``full``: every parameter (``logit_scale`` included, so the file is a complete CLIP;
  it is stored but not trained: the recipe keeps the backbone's temperature).
* ``bias``: every parameter named ``*.bias``: the q/k/v/out, fc1 and fc2 biases of every
  block and the LayerNorm biases (BitFit). CLIP's patch embedding and projections have none.
* ``proj``: ``visual_projection.weight`` and ``text_projection.weight``.
* ``partial``: the last transformer block of each encoder with the LayerNorm that follows
  it (``text_model.final_layer_norm``, ``vision_model.post_layernorm``); the projections are
  left out (they are ``proj``).
"""

from __future__ import annotations

import re
from typing import Iterable

PROJECTIONS = ("text_projection.weight", "visual_projection.weight")
TOWERS = {"text": "text_model", "vision": "vision_model"}
FINAL_NORMS = {"text": "text_model.final_layer_norm", "vision": "vision_model.post_layernorm"}
_LAYER = re.compile(r"^(text_model|vision_model)\.encoder\.layers\.(\d+)\.")


def layer_count(names: Iterable[str], tower: str) -> int:
    """How many transformer blocks the ``tower`` ("text" or "vision") of these parameter names has."""
    indices = [int(m.group(2)) for m in map(_LAYER.match, names) if m and m.group(1) == TOWERS[tower]]
    return max(indices) + 1 if indices else 0


def last_layer_prefixes(names: Iterable[str]) -> tuple[str, ...]:
    """The parameter-name prefixes of the last block of each tower."""
    names = list(names)
    return tuple(f"{TOWERS[t]}.encoder.layers.{layer_count(names, t) - 1}." for t in TOWERS)


def select(method: str, names: Iterable[str]) -> list[str]:
    """The parameter names weight baseline ``method`` trains, in the given order."""
    names = list(names)
    if method == "full":
        return names
    if method == "bias":
        return [n for n in names if n.endswith(".bias")]
    if method == "proj":
        return [n for n in names if n in PROJECTIONS]
    if method == "partial":
        prefixes = last_layer_prefixes(names) + tuple(f"{p}." for p in FINAL_NORMS.values())
        return [n for n in names if n.startswith(prefixes)]
    raise ValueError(f"{method!r} is not a weight baseline")
