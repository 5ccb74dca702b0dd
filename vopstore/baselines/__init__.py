"""The paper's baselines as methods: trained by the same recipe, stored and versioned like prompt sets.

Methods (the baselines of the VoP paper's Table 1; counts on CLIP ViT-B/32):

* ``full``: every backbone weight (151,277,312; the temperature is stored, not trained).
* ``bias``: every bias term, linear and LayerNorm (BitFit; 171,008).
* ``proj``: the final projection of both encoders (768x512 + 512x512 = 655,360).
* ``partial``: the last block + final LayerNorm of both encoders (10,242,816).
* ``adapter-attn`` / ``adapter-ffn``: bottleneck-64 adapters beside every attention / MLP
  block of both towers (1,982,976).

A baseline is an ``nn.Module`` holding only its trained tensors; the frozen backbone is
never modified (:mod:`vopstore.baselines.forward` computes CLIP from its parameters with
the baseline's tensors in place of, or beside, the backbone's). A version is one
checkpoint file in the prompt-set format (:mod:`vopstore.checkpoint`): the tensors,
named as the backbone names them (or ``{text,vision}.{down,up}.{weight,bias}``), plus the
method, its config and the backbone fingerprint.

Entry points (``build_method`` / ``load_prompt_set`` in vopstore.prompts take baselines too)::

    method = build_baseline("bias", backbone, seed=0)
    emb_t = method.encode_text(backbone, backbone.tokenize(texts))
    emb_v = method.encode_video(backbone, pixel_values)
    digest = method.save(path, backbone)
    method = load_baseline(path, backbone)
    bank = stack_baselines([a, b, c])               # bias, proj, adapters: one forward, a set per row
    emb = encode_text_rows(backbone, ids, type(a), a.config, bank, set_index)
    overrides = mixed_overrides(backbone.model, [RowGroup(...), ...], batch)   # bias + proj + adapter rows
"""

from __future__ import annotations

import importlib
from typing import Any

from vopstore.baselines.configs import BASELINES, is_baseline

# Imported on first use (PEP 562): the torch-free parts (configs, selection, schema, footprint) serve the
# store and `vopstore methods` without importing torch.
_LAZY = {
    "Baseline": "vopstore.baselines.base",
    **dict.fromkeys(("BASELINE_CLASSES", "build_baseline", "get_baseline", "load_baseline", "method_class",
                     "save_baseline", "stack_baselines", "baseline_from_tensors"), "vopstore.baselines.registry"),
    **dict.fromkeys(("encode_text_rows", "encode_video_rows", "encode_frames_rows", "mixed_overrides", "RowGroup"),
                    "vopstore.baselines.rows"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vopstore.baselines' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["BASELINES", "is_baseline", *_LAZY]
