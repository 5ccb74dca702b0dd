"""The prompt methods' settings and the backbone sizes they need: plain dataclasses, no torch.

Kept apart from the method modules so that the store can check a prompt set's config
and tensor shapes (vopstore.prompts.schema), and the trainer can refuse an unknown
method or setting before it loads anything, without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

from vopstore.baselines.configs import BASELINES, is_baseline
from vopstore.errors import ConfigError, UnknownMethodError

TEXT_LAYOUTS = ("prefix", "released")
# The paper's K^s = 8 intra-frame layers of ViT-B/32's 12: the share a VoP^F method keeps on another depth.
K_SHALLOW_SHARE = 8 / 12


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
        visual_depth: how many vision layers get fresh visual prompts (None: every intra-frame layer).
    """

    text_prompts: int = 8
    text_depth: int | None = None
    text_layout: str = "prefix"
    init_std: float = 0.02
    visual_depth: int | None = None

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
        check_depth("text_depth", self.text_depth, dims.text_layers)
        check_depth("visual_depth", self.visual_depth, dims.vision_layers)

    @classmethod
    def for_backbone(cls, dims: Dims, frames: int, settings: Mapping[str, Any] | None = None) -> MethodConfig:
        """The config for a backbone of ``dims`` fed ``frames`` frames a video.

        ``settings`` (the user's) win; a field they leave out that depends on the backbone or
        the clip length gets the value :meth:`backbone_defaults` derives from them.

        Raises:
            ConfigError: an unknown or invalid setting, or one the backbone cannot take.
        """
        config = cls.from_dict({**cls.backbone_defaults(dims, frames), **(settings or {})})
        config.validate_for(dims)
        return config

    @classmethod
    def backbone_defaults(cls, dims: Dims, frames: int) -> dict[str, Any]:
        """Defaults that follow from the backbone and the clip length (none for the shared settings)."""
        return {}

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


def check_depth(name: str, value: int | None, layers: int) -> None:
    """Refuse a prompt depth ``value`` (None: every layer) that the backbone's ``layers`` cannot hold."""
    if value is not None and not 1 <= value <= layers:
        raise ConfigError(f"{name} must be between 1 and {layers} (the backbone's layers), got {value}")


def depth_of(value: int | None, layers: int) -> int:
    """The layers a depth setting prompts: ``value``, or all ``layers`` when it is None."""
    return layers if value is None else value


@dataclass(frozen=True)
class VopConfig(MethodConfig):
    """Base VoP settings.

    Attributes:
        visual_prompts: visual prompt tokens per layer and frame (paper: 8).
    """

    visual_prompts: int = 8


@dataclass(frozen=True)
class VopPConfig(MethodConfig):
    """VoP^P settings: ``shared_prompts`` + ``position_prompts`` per frame slot, ``num_frames`` slots."""

    shared_prompts: int = 4
    position_prompts: int = 4
    num_frames: int = 12

    def validate_for(self, dims: Dims) -> None:
        super().validate_for(dims)
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")

    @classmethod
    def backbone_defaults(cls, dims: Dims, frames: int) -> dict[str, Any]:
        """One position-prompt slot per frame the videos are sampled to."""
        return {**super().backbone_defaults(dims, frames), "num_frames": frames}


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

    @classmethod
    def backbone_defaults(cls, dims: Dims, frames: int) -> dict[str, Any]:
        """A frame position row per sampled frame, and K^s the paper's share of the vision tower.

        The paper's K^s = 8 of 12 layers does not fit a smaller backbone; it becomes the same
        two-thirds of its layers, at least 1 and at most all but one (one inter-frame layer).
        """
        k_shallow = min(dims.vision_layers - 1, max(1, round(dims.vision_layers * K_SHALLOW_SHARE)))
        return {**super().backbone_defaults(dims, frames), "num_frames": frames, "k_shallow": k_shallow}


@dataclass(frozen=True)
class VopFConfig(FunctionFields, VopConfig):
    """VoP^F settings: VoP's plus ``k_shallow``, ``video_prompts``, ``num_frames``."""


@dataclass(frozen=True)
class VopFPConfig(FunctionFields, VopPConfig):
    """VoP^P's settings plus ``k_shallow`` and ``video_prompts``; ``num_frames`` sizes both tables."""


@dataclass(frozen=True)
class VopFCConfig(FunctionFields, VopCConfig):
    """VoP^C's settings plus ``k_shallow``, ``video_prompts`` and ``num_frames``."""


# method name -> its config class; vopstore.prompts.registry.METHODS must agree (a test checks it).
METHOD_CONFIGS: dict[str, type[MethodConfig]] = {
    "vop": VopConfig, "vop-p": VopPConfig, "vop-c": VopCConfig,
    "vop-f": VopFConfig, "vop-f+p": VopFPConfig, "vop-f+c": VopFCConfig,
}


def config_class(method: str) -> type:
    """The config class of any trainable method: a VoP prompt method's or a baseline's (no torch needed).

    Raises:
        UnknownMethodError: no such method; the message lists every one there is.
    """
    if method in METHOD_CONFIGS:
        return METHOD_CONFIGS[method]
    if is_baseline(method):
        return BASELINES[method][0]
    raise UnknownMethodError(f"unknown method {method!r}; choose a prompt method ({', '.join(METHOD_CONFIGS)}) "
                             f"or a baseline ({', '.join(BASELINES)})")


def complete_settings(method: str, dims: Dims, frames: int, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` of ``method`` completed for a backbone of ``dims`` fed ``frames`` frames a video.

    A prompt method's config completes itself (:meth:`MethodConfig.for_backbone`); a baseline's
    settings depend on neither, so they come back as given (its builder checks them).

    Raises:
        UnknownMethodError: no such method.
        ConfigError: an unknown or invalid setting, or one the backbone cannot take.
    """
    cls = config_class(method)
    if is_baseline(method):
        return dict(settings)
    return cls.for_backbone(dims, frames, settings).to_dict()
