"""What every baseline shares: a module that holds only its trainable tensors, and its forward.

A baseline's tensors are named as in its file: backbone parameter names for the weight
baselines (full, bias, proj, partial), ``{text,vision}.{down,up}.{weight,bias}`` for the
adapters. ``nn.Module`` forbids dots in parameter names, so they are kept in a
``ParameterDict`` under the same names with ``/`` for ``.``.

The interface matches what the trainer uses of a prompt method: ``text_tokens``,
``save``, ``trainable_params``/``paper_params``, ``config``, ``name``, plus
``encode_text`` / ``encode_video`` (vopstore.prompts' encode functions dispatch to them).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from vopstore.baselines.configs import BASELINES, PER_ROW, BaselineConfig
from vopstore.baselines.forward import Overrides, frame_features, text_features
from vopstore.baselines.selection import select
from vopstore.errors import ConfigError
from vopstore.prompts.forward import pool_frames


def as_video(pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, F, 3, H, W) as it is; one image per row (B, 3, H, W) as a one-frame video."""
    if pixel_values.dim() == 4:
        return pixel_values.unsqueeze(1)
    if pixel_values.dim() != 5:
        raise ConfigError(f"pixel_values must be (B, F, 3, H, W), got shape {tuple(pixel_values.shape)}")
    return pixel_values


def _key(name: str) -> str:
    return name.replace(".", "/")


def _name(key: str) -> str:
    return key.replace("/", ".")


class Baseline(nn.Module):
    """Base class of the six baselines: the trained tensors of ONE version, nothing of the backbone else.

    Subclasses set ``name`` and implement ``initial_tensors`` and ``overrides``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[BaselineConfig]] = BaselineConfig
    text_tokens: ClassVar[int] = 0  # baselines add no prompt tokens to the text
    frozen: ClassVar[tuple[str, ...]] = ()  # tensors stored with the version but not trained

    def __init__(self, config: BaselineConfig, tensors: Mapping[str, torch.Tensor], copy: bool = True) -> None:
        super().__init__()
        self.config = config
        self.weights = nn.ParameterDict({
            _key(n): nn.Parameter(t.detach().clone() if copy else t.detach(), requires_grad=n not in self.frozen)
            for n, t in tensors.items()})

    @property
    def method(self) -> str:
        return self.name

    @classmethod
    def summary(cls) -> str:
        return BASELINES[cls.name][2]

    @classmethod
    def serving(cls) -> str:
        """How a runtime can hold it: ``per-row`` (co-batched on the shared backbone) or ``own model``."""
        return BASELINES[cls.name][1]

    @classmethod
    def co_batched(cls) -> bool:
        return cls.serving() == PER_ROW

    @classmethod
    def initial_tensors(cls, config: BaselineConfig, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors a fresh version starts from, given the backbone's named parameters (real or meta)."""
        raise NotImplementedError

    @classmethod
    def overrides(cls, config: BaselineConfig, tensors: Mapping[str, torch.Tensor]) -> Overrides:
        """The forward's overrides from this baseline's tensors by file name (shared, or gathered per row)."""
        raise NotImplementedError

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """The trainable tensors by their file names (the parameters themselves: gradients flow)."""
        return {_name(k): p for k, p in self.weights.items()}

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def paper_params(self) -> int:
        """The count comparable with the paper's Table 1: every tensor a baseline trains."""
        return self.trainable_params()

    def encode_text(self, backbone: Any, input_ids: torch.Tensor) -> torch.Tensor:
        """Projected text embeddings (B, D), NOT normalised."""
        return text_features(backbone, input_ids, self.overrides(self.config, self.named_tensors()))

    def encode_frames(self, backbone: Any, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected per-frame embeddings (B, F, D), NOT normalised."""
        return frame_features(backbone, as_video(pixel_values), self.overrides(self.config, self.named_tensors()))

    def encode_video(self, backbone: Any, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Video embeddings (B, D): the mean of the L2-normalised frame embeddings (as for prompt methods)."""
        return pool_frames(self.encode_frames(backbone, pixel_values), normalize)

    def save(self, path: Any, backbone: Any) -> str:
        """Write this baseline to one checkpoint file; return its sha256."""
        from vopstore.baselines.registry import save_baseline  # the registry imports this module: a cycle

        return save_baseline(self, path, backbone)


class WeightBaseline(Baseline):
    """A baseline that trains some of the backbone's own weights: they start as the backbone's values.

    At initialisation its outputs therefore equal the frozen backbone's.
    """

    @classmethod
    def initial_tensors(cls, config, params):
        return {n: params[n] for n in select(cls.name, params)}

    @classmethod
    def overrides(cls, config, tensors):
        return Overrides(params=dict(tensors))

