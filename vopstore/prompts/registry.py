"""The one registry of prompt methods, and the ways in and out: build, save, load, stack, count."""

from __future__ import annotations

import os
from typing import Any

import torch

from vopstore.baselines.configs import is_baseline  # issue 14: baselines are methods too (torch-free import)
from vopstore.checkpoint import PromptSetMeta, load_checkpoint, save_checkpoint
from vopstore.errors import BackboneMismatchError, InvalidCheckpointError, UnknownMethodError
from vopstore.prompts.base import Dims, PromptMethod
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
PAPER_FULL_PARAMS = 119_800_000  # the paper's "Full" denominator (Table 1), unexplained (spec §13.7)


def get_method(name: str) -> type[PromptMethod]:
    """The method class registered under ``name``; raises UnknownMethodError."""
    try:
        return METHODS[name]
    except KeyError:
        if is_baseline(name):  # issue 14: the runtime asks here; it stacks prompt sets only, for now
            raise UnknownMethodError(f"{name!r} is a baseline, not a prompt method: the runtime does not serve "
                                     "baselines yet; evaluate it with 'vopstore eval'") from None
        raise UnknownMethodError(f"unknown prompt method {name!r}; choose one of {', '.join(METHODS)}") from None


def _construct(name: str, dims: Dims, seed: int, config: dict, strict: bool = True) -> PromptMethod:
    cls = get_method(name)
    cfg = cls.config_class.from_dict(config, strict=strict)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        return cls(cfg, dims)


def build_method(name: str, backbone: Any, seed: int = 0, **config: Any) -> PromptMethod:
    """A freshly initialised prompt set for ``backbone`` (on its device and dtype).

    Args:
        name: one of ``METHODS`` (``vop``, ``vop-p``, ``vop-c``, ``vop-f``, ``vop-f+p``, ``vop-f+c``).
        backbone: a :class:`vopstore.backbone.Backbone`.
        seed: initialisation seed.
        **config: fields of the method's config dataclass (e.g. ``k_shallow=8``).

    Raises:
        UnknownMethodError: no such method.
        ConfigError: an unknown or invalid setting.
    """
    if is_baseline(name):  # issue 14: full, bias, proj, partial, adapter-attn, adapter-ffn
        from vopstore.baselines.registry import build_baseline

        return build_baseline(name, backbone, seed=seed, **config)
    method = _construct(name, Dims.from_clip_config(backbone.model.config), seed, config)
    return method.to(device=backbone.device, dtype=backbone.dtype)


def build_meta(name: str, dims: Dims = VIT_B32_DIMS, **config: Any) -> PromptMethod:
    """The method's modules on the meta device: shapes and counts, no memory, no init cost."""
    cls = get_method(name)
    with torch.device("meta"):
        return cls(cls.config_class.from_dict(config), dims)


def save_prompt_set(method: PromptMethod, path: str | os.PathLike, backbone: Any) -> str:
    """Write ``method``'s tensors + metadata to one checkpoint file; return its sha256."""
    tensors = {name: p.detach() for name, p in method.named_parameters()}
    dtypes = {str(t.dtype).removeprefix("torch.") for t in tensors.values()}
    meta = PromptSetMeta(method=method.name, config=method.config.to_dict(), backbone_name=backbone.name,
                         backbone_fingerprint=backbone.fingerprint, dtype=",".join(sorted(dtypes)),
                         params=sum(t.numel() for t in tensors.values()),
                         extra={"paper_params": method.paper_params()})
    return save_checkpoint(path, tensors, meta)


def load_prompt_set(path: str | os.PathLike, backbone: Any, device: Any = None) -> PromptMethod:
    """Load a prompt set onto ``backbone`` (its dtype; ``device`` or its device); refuse another backbone.

    Raises:
        BackboneMismatchError: the file's backbone fingerprint differs from ``backbone.fingerprint``.
        UnknownMethodError: the file names a method this vopstore does not know.
        InvalidCheckpointError: the tensors do not fit the method's config.
    """
    meta, tensors = load_checkpoint(path)
    return from_tensors(meta, tensors, backbone, device=device, source=str(path))


def from_tensors(meta: PromptSetMeta, tensors: dict, backbone: Any, device: Any = None,
                 source: str = "prompt set") -> PromptMethod:
    """Build a method from checkpoint metadata + tensors (also used by the runtime on blob bytes)."""
    if is_baseline(meta.method):  # issue 14: a stored baseline loads through its own registry
        from vopstore.baselines.registry import baseline_from_tensors

        return baseline_from_tensors(meta, tensors, backbone, device=device, source=source)
    if meta.backbone_fingerprint != backbone.fingerprint:
        raise BackboneMismatchError(
            f"{source} was trained on backbone {meta.backbone_name} ({meta.backbone_fingerprint[:12]}), "
            f"not on {backbone.name} ({backbone.fingerprint[:12]}); load the backbone it was trained on")
    method = _construct(meta.method, Dims.from_clip_config(backbone.model.config), 0, meta.config, strict=False)
    expected = {name: tuple(p.shape) for name, p in method.named_parameters()}
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != found:
        raise InvalidCheckpointError(f"{source}: tensors {found} do not match {meta.method} with its config "
                                     f"(expected {expected})")
    method.load_state_dict(tensors, strict=True)
    return method.to(device=device or backbone.device, dtype=backbone.dtype)


def stack_prompt_sets(methods: list[PromptMethod]) -> dict[str, torch.Tensor]:
    """Stack N prompt sets of one method and config into a bank: {name: (N, *shape)}, detached."""
    if not methods:
        raise ValueError("stack_prompt_sets needs at least one prompt set")
    first = methods[0]
    for other in methods[1:]:
        if other.name != first.name or other.config != first.config:
            raise InvalidCheckpointError(f"cannot stack {other.name} {other.config} with {first.name} "
                                         f"{first.config}: a bank holds one method and one config")
    return {name: torch.stack([dict(m.named_parameters())[name].detach() for m in methods])
            for name, _ in first.named_parameters()}


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
