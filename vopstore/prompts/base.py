"""What every prompt method shares: backbone dimensions, the config base class, the module base class.

The text side is the same for all six methods (deep text prompts, paper §3.2), so it
lives here; each method module adds its visual side.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

# The configs and Dims are torch-free (vopstore.prompts.configs); re-exported here for the method modules.
from vopstore.prompts.configs import TEXT_LAYOUTS, Dims, MethodConfig, _check_depth, depth_of  # noqa: F401


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
