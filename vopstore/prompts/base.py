"""What every prompt method shares: backbone dimensions, the config base class, the module base class.

The text side is the same for all six methods (deep text prompts, paper §3.2), so it
lives here; each method module adds its visual side.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

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
            (recommended, spec §1.3); ``released`` reproduces the authors' released
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


def normal_param(shape: tuple[int, ...], std: float) -> nn.Parameter:
    """A prompt parameter with N(0, std) init (draws from the current torch RNG)."""
    return nn.Parameter(torch.randn(shape) * std)


class PromptMethod(nn.Module):
    """Base class of the six methods: the learned tensors of ONE prompt set.

    Subclasses set ``name``, ``config_class`` and implement ``_build_visual`` and
    ``video_prompts``. Parameters are created in ``__init__`` from ``Dims`` only, so a
    method can be built on the meta device to count its parameters.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `vopstore methods`
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    # parameters that train but that the paper's Table 1 does not count (frame position embedding)
    uncounted: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MethodConfig, dims: Dims) -> None:
        super().__init__()
        config.validate_for(dims)
        self.config = config
        self.dims = dims
        depth = depth_of(config.text_depth, dims.text_layers)
        self.text = normal_param((depth, config.text_prompts, dims.text_width), config.init_std)
        self._build_visual()

    @property
    def method(self) -> str:
        return self.name

    @property
    def text_tokens(self) -> int:
        """How many of CLIP's 77 text positions the prompts take (pass to ``Backbone.tokenize``)."""
        return self.config.text_prompts

    def _build_visual(self) -> None:
        raise NotImplementedError

    def prompt_tensors(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor with a leading set dimension of 1 (views: gradients flow)."""
        return {name: p.unsqueeze(0) for name, p in self.named_parameters()}

    def trainable_params(self) -> int:
        """Everything that trains and is saved (includes the frame position embedding)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def paper_params(self) -> int:
        """The count comparable with the paper's Table 1 (leaves out ``uncounted`` tensors)."""
        return sum(p.numel() for n, p in self.named_parameters() if n not in self.uncounted)

    @classmethod
    def text_prompts(cls, config: MethodConfig, tensors: dict, set_index: torch.Tensor):
        """Per-row text prompts for a batch: (B, depth, P, D) gathered from the set dimension."""
        from vopstore.prompts.forward import TextPrompts

        return TextPrompts(prompts=gather(tensors["text"], set_index), layout=config.text_layout)

    @classmethod
    def video_prompts(cls, config: MethodConfig, tensors: dict, set_index: torch.Tensor, frames: int):
        """Per-row visual prompts for a batch of ``len(set_index)`` videos of ``frames`` frames."""
        raise NotImplementedError

    def save(self, path, backbone) -> str:
        """Write this prompt set to one checkpoint file; return its sha256."""
        from vopstore.prompts.registry import save_prompt_set

        return save_prompt_set(self, path, backbone)


def gather(tensor: torch.Tensor, set_index: torch.Tensor) -> torch.Tensor:
    """Rows of ``tensor`` (S, ...) for each entry of ``set_index`` (B,); no copy when S == 1."""
    if tensor.shape[0] == 1:
        return tensor.expand(set_index.shape[0], *tensor.shape[1:])
    return tensor[set_index.to(tensor.device)]


def per_frame(tensor: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, ...) -> (B*F, ...): the same value for every frame of a video."""
    batch = tensor.shape[0]
    return tensor.unsqueeze(1).expand(batch, frames, *tensor.shape[1:]).reshape(batch * frames, *tensor.shape[1:])
