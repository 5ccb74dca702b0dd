"""The baselines' names, settings and how the runtime could serve each: plain dataclasses, no torch.

Kept torch-free so that the store can check a stored baseline (vopstore.baselines.schema)
and ``vopstore methods`` can list them without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

from vopstore.errors import ConfigError

# How a runtime can hold a version of each baseline. "per-row": small tensors on the shared
# backbone (a bias add, a projection, an adapter per row), so it can share a batch with prompt
# sets; "own model": it replaces weights every row goes through, so it is its own model.
PER_ROW, OWN_MODEL = "per-row", "own model"


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of a baseline; the weight baselines (full, bias, proj, partial) have none."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{type(self).__name__}.{f.name} must be an integer >= 1, got {value!r}")
            if f.type == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ConfigError(f"{type(self).__name__}.{f.name} must be a finite number, got {value!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, strict: bool = True) -> BaselineConfig:
        """Build from a dict; unknown keys raise (strict) or are dropped with a warning (newer files)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown and strict:
            raise ConfigError(f"unknown setting(s) {unknown} for {cls.__name__}; known: {sorted(known) or 'none'}")
        if unknown:
            warnings.warn(f"ignoring unknown {cls.__name__} setting(s) {unknown} (written by a newer vopstore?)")
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class AdapterConfig(BaselineConfig):
    """Adapter^ATTN / Adapter^FFN settings.

    Attributes:
        hidden: the adapter's bottleneck width (paper: 64).
        scale: the factor on the adapter branch (AdaptFormer's s = 0.1); the up projection
            starts at zero, so a fresh adapter leaves the backbone's output unchanged.
    """

    hidden: int = 64
    scale: float = 0.1


# name -> (config class, how the runtime can serve it, one line for `vopstore methods`)
BASELINES: dict[str, tuple[type[BaselineConfig], str, str]] = {
    "full": (BaselineConfig, OWN_MODEL, "every backbone parameter (a fine-tuned copy of CLIP)"),
    "bias": (BaselineConfig, PER_ROW, "every bias term: linear and LayerNorm biases (BitFit)"),
    "proj": (BaselineConfig, PER_ROW, "the final projection of both encoders"),
    "partial": (BaselineConfig, OWN_MODEL, "last transformer block + final LayerNorm of both encoders"),
    "adapter-attn": (AdapterConfig, PER_ROW, "bottleneck-64 adapters parallel to every attention block"),
    "adapter-ffn": (AdapterConfig, PER_ROW, "bottleneck-64 adapters parallel to every MLP block"),
}


def is_baseline(name: str) -> bool:
    """Whether ``name`` is one of the baselines (not a VoP prompt method)."""
    return name in BASELINES


def baseline_config(name: str, raw: dict, strict: bool = True) -> BaselineConfig:
    """The config object of baseline ``name`` from a dict (a checkpoint's or the user's settings)."""
    return BASELINES[name][0].from_dict(raw, strict=strict)
