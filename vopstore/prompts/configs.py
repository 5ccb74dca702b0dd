"""The prompt methods' settings and the backbone sizes they need: plain dataclasses, no torch.

Kept apart from the method modules so that the store can check a prompt set's config
and tensor shapes (vopstore.prompts.schema) without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

from vopstore.errors import ConfigError

TEXT_LAYOUTS = ("prefix", "released")


@dataclass(frozen=True)
class Dims:
    """The backbone sizes a prompt method needs (no weights)."""

    text_layers: int
    text_width: int
    vision_layers: int
    vision_width: int

    @classmethod
    def from_clip_config(cls, config: Any) -> Dims:
        t, v = config.text_config, config.vision_config
        return cls(t.num_hidden_layers, t.hidden_size, v.num_hidden_layers, v.hidden_size)


@dataclass(frozen=True)
class MethodConfig:
    """Settings shared by all methods; each method's config extends it.

    Attributes:
        text_prompts: text prompt tokens per layer (paper: 8).
        text_depth: how many text layers get fresh prompts (None: all).
        text_layout: ``prefix`` puts all text prompts after SOT and pools at EOT + n
            (recommended: it is the paper's Eq. 3, and the released code's suffix prompts sit
            where the pooled token never sees them); ``released`` reproduces the authors' released
            model: half after SOT, half at the end of a 77-long sequence, pooled at
            ``argmax(ids) + n`` with zeros as padding (so their checkpoint can be imported).
        init_std: std of the normal init of learned prompt tokens (paper code: 0.02).
    """

    text_prompts: int = 8
    text_depth: int | None = None
    text_layout: str = "prefix"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "int | None") and value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError(f"{type(self).__name__}.{f.name} must be an integer >= 0, got {value!r}")
        if self.text_layout not in TEXT_LAYOUTS:
            raise ConfigError(f"text_layout must be one of {TEXT_LAYOUTS}, got {self.text_layout!r}")
        if self.text_layout == "released" and self.text_prompts % 2:
            raise ConfigError(f"the released layout splits text prompts in two halves; got {self.text_prompts}")
        if not isinstance(self.init_std, (int, float)) or not math.isfinite(self.init_std) or self.init_std < 0:
            raise ConfigError(f"init_std must be a finite number >= 0, got {self.init_std!r}")

    def validate_for(self, dims: Dims) -> None:
        """Check the settings that depend on the backbone's depth."""
        _check_depth("text_depth", self.text_depth, dims.text_layers)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, strict: bool = True) -> MethodConfig:
        """Build from a dict; unknown keys raise (strict) or are dropped with a warning (newer files)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown and strict:
            raise ConfigError(f"unknown setting(s) {unknown} for {cls.__name__}; known: {sorted(known)}")
        if unknown:
            warnings.warn(f"ignoring unknown {cls.__name__} setting(s) {unknown} (written by a newer vopstore?)")
        return cls(**{k: v for k, v in raw.items() if k in known})


def _check_depth(name: str, value: int | None, layers: int) -> None:
    if value is not None and not 1 <= value <= layers:
        raise ConfigError(f"{name} must be between 1 and {layers} (the backbone's layers), got {value}")


def depth_of(value: int | None, layers: int) -> int:
    return layers if value is None else value


@dataclass(frozen=True)
class VopConfig(MethodConfig):
    """Base VoP settings.

    Attributes:
        visual_prompts: visual prompt tokens per layer and frame (paper: 8).
        visual_depth: how many vision layers get fresh prompts (None: all intra-frame layers).
    """

    visual_prompts: int = 8
    visual_depth: int | None = None

    def validate_for(self, dims: Dims) -> None:
        super().validate_for(dims)
        _check_depth("visual_depth", self.visual_depth, dims.vision_layers)


@dataclass(frozen=True)
class VopPConfig(MethodConfig):
    """VoP^P settings: ``shared_prompts`` + ``position_prompts`` per frame slot, ``num_frames`` slots."""

    shared_prompts: int = 4
    position_prompts: int = 4
    num_frames: int = 12
    visual_depth: int | None = None

    def validate_for(self, dims: Dims) -> None:
        super().validate_for(dims)
        _check_depth("visual_depth", self.visual_depth, dims.vision_layers)
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")


@dataclass(frozen=True)
class VopCConfig(MethodConfig):
    """VoP^C settings.

    Attributes:
        generic_prompts: learned frame-agnostic tokens per layer (4).
        generated_prompts: tokens generated per frame and layer (paper's video-prompt length, 4).
        cmm_hidden: BiLSTM hidden size per direction (None: the vision width, 768 on ViT-B/32).
    """

    generic_prompts: int = 4
    generated_prompts: int = 4
    cmm_hidden: int | None = None
    visual_depth: int | None = None

    def validate_for(self, dims: Dims) -> None:
        super().validate_for(dims)
        _check_depth("visual_depth", self.visual_depth, dims.vision_layers)


@dataclass(frozen=True)
class FunctionFields:
    """The VoP^F settings mixed into a config.

    Attributes:
        k_shallow: intra-frame layers K^s (paper: 8); the remaining layers are inter-frame.
        video_prompts: video-level prompt tokens per inter-frame layer (8).
        num_frames: rows of the frame position embedding (the most frames a video may have).
    """

    k_shallow: int = 8
    video_prompts: int = 8
    num_frames: int = 12

    def validate_for(self, dims: Dims) -> None:
        super().validate_for(dims)
        if not 1 <= self.k_shallow < dims.vision_layers:
            raise ConfigError(f"k_shallow must be between 1 and {dims.vision_layers - 1} "
                              f"(the backbone has {dims.vision_layers} vision layers), got {self.k_shallow}")
        if getattr(self, "visual_depth", None) is not None and self.visual_depth > self.k_shallow:
            raise ConfigError(f"visual_depth ({self.visual_depth}) cannot exceed k_shallow ({self.k_shallow})")
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")


@dataclass(frozen=True)
class VopFConfig(FunctionFields, VopConfig):
    """VoP^F settings: VoP's plus ``k_shallow``, ``video_prompts``, ``num_frames``."""


@dataclass(frozen=True)
class VopFPConfig(FunctionFields, VopPConfig):
    """VoP^P's settings plus ``k_shallow`` and ``video_prompts``; ``num_frames`` sizes both tables."""


@dataclass(frozen=True)
class VopFCConfig(FunctionFields, VopCConfig):
    """VoP^C's settings plus ``k_shallow``, ``video_prompts`` and ``num_frames``."""
