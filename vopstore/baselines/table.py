"""The VoP family and the baselines side by side on CLIP ViT-B/32: what each trains, stores and how it is served.

Everything is computed on the meta device (no weights, no memory): the baselines'
tensors from the real ViT-B/32 parameter table, the stored bytes from their shapes
(vopstore.baselines.footprint), exactly what one version costs in the store at fp32.
"""

from __future__ import annotations

from vopstore.baselines.configs import BASELINES, PER_ROW
from vopstore.baselines.footprint import checkpoint_size
from vopstore.checkpoint import PromptSetMeta

VIT_B32_NAME = "openai/clip-vit-base-patch32"
_FINGERPRINT = "0" * 64  # every fingerprint is 64 hex digits: the size does not depend on which


def vit_b32_meta_params() -> dict:
    """ViT-B/32's named parameters (CLIPConfig() defaults) as meta tensors."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    with torch.device("meta"):
        return dict(CLIPModel(CLIPConfig()).named_parameters())


def _meta(method: str, config: dict, params: int, extra: dict | None = None) -> PromptSetMeta:
    return PromptSetMeta(method=method, config=config, backbone_name=VIT_B32_NAME, backbone_fingerprint=_FINGERPRINT,
                         dtype="float32", params=params, extra=extra or {})


def baseline_rows(params: dict | None = None) -> list[dict]:
    """One row per baseline with its counts and stored bytes on ``params`` (ViT-B/32 by default)."""
    from vopstore.baselines.registry import BASELINE_CLASSES
    from vopstore.prompts.registry import PAPER_FULL_PARAMS

    params = params if params is not None else vit_b32_meta_params()
    backbone_params = sum(p.numel() for p in params.values())
    rows = []
    for name, cls in BASELINE_CLASSES.items():
        config = cls.config_class()
        shapes = {n: tuple(t.shape) for n, t in cls.initial_tensors(config, params).items()}
        stored = sum(_numel(shape) for shape in shapes.values())
        count = stored - sum(_numel(shapes[n]) for n in cls.frozen if n in shapes)
        rows.append({"name": name, "family": "baseline", "trainable_params": count, "paper_params": count,
                     "stored_params": stored, "share": count / backbone_params,
                     "paper_share": count / PAPER_FULL_PARAMS, "backbone_params": backbone_params,
                     "stored_bytes": checkpoint_size(shapes, _meta(name, config.to_dict(), stored)),
                     "runtime": BASELINES[name][1], "co_batch": BASELINES[name][1] == PER_ROW,
                     "served": True, "summary": BASELINES[name][2]})
    return rows


def prompt_rows() -> list[dict]:
    """The VoP family's rows (vopstore.prompts.registry.method_table) with their stored bytes added."""
    from vopstore.prompts.registry import build_meta, method_table

    rows = []
    for row in method_table():
        method = build_meta(row["name"])
        shapes = {n: tuple(p.shape) for n, p in method.named_parameters()}
        meta = _meta(row["name"], method.config.to_dict(), row["trainable_params"],
                     {"paper_params": row["paper_params"]})  # what PromptMethod.save writes
        rows.append({**row, "family": "VoP", "stored_params": row["trainable_params"],
                     "stored_bytes": checkpoint_size(shapes, meta), "runtime": "bank", "co_batch": True,
                     "served": True})
    return rows


def methods_table() -> list[dict]:
    """Every trainable method: the VoP family first, then the baselines."""
    return prompt_rows() + baseline_rows()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n
