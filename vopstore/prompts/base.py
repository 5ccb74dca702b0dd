"""What every prompt method shares: the module base class, its depth rules, and the bank helpers.

The text side is the same for all six methods (fresh learned tokens after SOT at every
prompted text layer), so it lives here; each method module adds its visual side. The
method modules import their shared helpers from here and their config from
:mod:`vopstore.prompts.configs` (torch-free, so the store can check a config without torch).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from torch import nn

from vopstore.checkpoint import PromptSetMeta, save_checkpoint
from vopstore.errors import ConfigError, InvalidCheckpointError
from vopstore.prompts.configs import Dims, MethodConfig, depth_of
from vopstore.prompts.forward import TextPrompts


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

    def intra_layers(self) -> int:
        """Vision layers that attend within one frame: all of them, unless a VoP^F method says fewer."""
        return self.dims.vision_layers

    def visual_depth(self) -> int:
        """How many intra-frame layers get fresh visual prompts (the config's ``visual_depth``; None: all)."""
        return depth_of(self.config.visual_depth, self.intra_layers())

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
        return TextPrompts(prompts=gather(tensors["text"], set_index), layout=config.text_layout)

    @classmethod
    def video_prompts(cls, config: MethodConfig, tensors: dict, set_index: torch.Tensor, frames: int):
        """Per-row visual prompts for a batch of ``len(set_index)`` videos of ``frames`` frames."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike, backbone: Any) -> str:
        """Write this prompt set for ``backbone`` to one checkpoint file; return its sha256.

        Read it back with :func:`vopstore.prompts.io.load_prompt_set`.
        """
        tensors = {name: p.detach() for name, p in self.named_parameters()}
        meta = PromptSetMeta.for_tensors(tensors, method=self.name, config=self.config.to_dict(), backbone=backbone,
                                         extra={"paper_params": self.paper_params()})
        return save_checkpoint(path, tensors, meta)


def check_frames(frames: int, num_frames: int, method: str) -> None:
    """Refuse videos of more ``frames`` than the per-frame tables of ``method`` have rows (``num_frames``)."""
    if frames > num_frames:
        raise ConfigError(f"{method} was built for at most {num_frames} frames per video, got {frames}; "
                          f"sample fewer frames or build it with num_frames={frames}")


def gather(tensor: torch.Tensor, set_index: torch.Tensor) -> torch.Tensor:
    """Rows of ``tensor`` (S, ...) for each entry of ``set_index`` (B,); no copy when S == 1."""
    if tensor.shape[0] == 1:
        return tensor.expand(set_index.shape[0], *tensor.shape[1:])
    return tensor[set_index.to(tensor.device)]


def per_frame(tensor: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, ...) -> (B*F, ...): the same value for every frame of a video."""
    batch = tensor.shape[0]
    return tensor.unsqueeze(1).expand(batch, frames, *tensor.shape[1:]).reshape(batch * frames, *tensor.shape[1:])


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
