"""The baselines' registry and the ways in and out: build, save, load, stack, and one lookup across method kinds."""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from vopstore.backbone import require_same_backbone
from vopstore.baselines.adapter import AdapterAttn, AdapterFfn
from vopstore.baselines.base import Baseline
from vopstore.baselines.bias import Bias
from vopstore.baselines.full import Full
from vopstore.baselines.partial import Partial
from vopstore.baselines.proj import Proj
from vopstore.checkpoint import PromptSetMeta, load_checkpoint, save_checkpoint
from vopstore.errors import InvalidCheckpointError, UnknownMethodError

BASELINE_CLASSES: dict[str, type[Baseline]] = {
    cls.name: cls for cls in (Full, Bias, Proj, Partial, AdapterAttn, AdapterFfn)}


def get_baseline(name: str) -> type[Baseline]:
    """The baseline class registered under ``name``; raises UnknownMethodError."""
    try:
        return BASELINE_CLASSES[name]
    except KeyError:
        raise UnknownMethodError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINE_CLASSES)}") from None


def method_class(name: str) -> type:
    """The class of any trainable method: a VoP prompt method or a baseline."""
    from vopstore.prompts.registry import METHODS

    found = METHODS.get(name) or BASELINE_CLASSES.get(name)
    if found is None:
        raise UnknownMethodError(f"unknown method {name!r}; choose a prompt method ({', '.join(METHODS)}) "
                                 f"or a baseline ({', '.join(BASELINE_CLASSES)})")
    return found


def build_baseline(name: str, backbone: Any, seed: int = 0, **config: Any) -> Baseline:
    """A fresh baseline for ``backbone`` (its device and dtype): weights copied from it, adapters seeded.

    Raises:
        UnknownMethodError: no such baseline.
        ConfigError: an unknown or invalid setting.
    """
    cls = get_baseline(name)
    cfg = cls.config_class.from_dict(config)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        tensors = cls.initial_tensors(cfg, dict(backbone.model.named_parameters()))
    return cls(cfg, tensors).to(device=backbone.device, dtype=backbone.dtype)


def expected_shapes(cls: type[Baseline], config: Any, model: Any) -> dict[str, tuple[int, ...]]:
    """Every tensor of baseline ``cls`` with ``config`` on ``model`` (a CLIPModel), computed on meta."""
    meta = {n: torch.empty(p.shape, device="meta", dtype=p.dtype) for n, p in model.named_parameters()}
    return {n: tuple(t.shape) for n, t in cls.initial_tensors(config, meta).items()}


def save_baseline(method: Baseline, path: str | os.PathLike, backbone: Any) -> str:
    """Write ``method``'s tensors + metadata to one checkpoint file; return its sha256."""
    tensors = {name: t.detach() for name, t in method.named_tensors().items()}
    dtypes = {str(t.dtype).removeprefix("torch.") for t in tensors.values()}
    meta = PromptSetMeta(method=method.name, config=method.config.to_dict(), backbone_name=backbone.name,
                         backbone_fingerprint=backbone.fingerprint, dtype=",".join(sorted(dtypes)),
                         params=sum(t.numel() for t in tensors.values()))
    return save_checkpoint(path, tensors, meta)


def load_baseline(path: str | os.PathLike, backbone: Any, device: Any = None) -> Baseline:
    """Load a stored baseline onto ``backbone``; refuse another backbone (as ``load_prompt_set`` does)."""
    meta, tensors = load_checkpoint(path)
    return baseline_from_tensors(meta, tensors, backbone, device=device, source=str(path))


def baseline_from_tensors(meta: PromptSetMeta, tensors: Mapping[str, torch.Tensor], backbone: Any,
                          device: Any = None, source: str = "baseline") -> Baseline:
    """Build a baseline from checkpoint metadata + tensors, after checking they fit ``backbone`` exactly."""
    require_same_backbone(meta, backbone, source)
    cls = get_baseline(meta.method)
    cfg = cls.config_class.from_dict(meta.config, strict=False)
    expected = expected_shapes(cls, cfg, backbone.model)
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != found:
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        wrong = sorted(n for n in set(expected) & set(found) if expected[n] != found[n])
        raise InvalidCheckpointError(f"{source}: tensors do not fit {meta.method} on this backbone "
                                     f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {wrong[:3]})")
    # copy=False: the loaded tensors become the parameters (a full fine-tune is never held twice)
    return cls(cfg, tensors, copy=False).to(device=device or backbone.device, dtype=backbone.dtype)


def stack_baselines(methods: list[Baseline]) -> dict[str, torch.Tensor]:
    """Stack N versions of one co-batchable baseline and config: {file name: (N, *shape)}, detached."""
    if not methods:
        raise ValueError("stack_baselines needs at least one baseline")
    first = methods[0]
    if not first.co_batched():
        raise InvalidCheckpointError(f"{first.name} replaces weights every row goes through; it is served as "
                                     "its own model, not stacked per row")
    for other in methods[1:]:
        if other.name != first.name or other.config != first.config:
            raise InvalidCheckpointError(f"cannot stack {other.name} {other.config} with {first.name} "
                                         f"{first.config}: a bank holds one method and one config")
    named = [m.named_tensors() for m in methods]
    return {name: torch.stack([n[name].detach() for n in named]) for name in named[0]}
