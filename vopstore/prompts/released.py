"""The authors' released VoP checkpoint: its prompts as a ``vop`` prompt set, its CLIP weights as a backbone.

The authors published basic VoP only, as the ModelScope model ``VoP_msrvtt9k.pth``: a
``torch.save`` of ``{"state_dict": ...}`` taken from a DataParallel wrapper, so every key
starts with ``module.``. Under it:

* ``text_prompt_learner.text_prompts`` (L_t, P, 512): per layer, P/2 prompts placed after
  SOT and P/2 before the last slot of the 77-long sequence (the ``released`` text layout);
* ``visual_prompt_learner.visual_prompts`` (L_v, 1, P_v, 768): per layer, the same for every frame;
* ``clip.*``: the OpenAI-layout CLIP it was trained on (converted by :mod:`vopstore.openai_clip`);
* ``image_encoder.*`` / ``text_encoder.*``: the same CLIP modules again under the names of
  the modules that share them; skipped.

Any other key means a model this importer does not understand (another variant's
prompts, say), and the file is refused rather than imported without them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vopstore.errors import FileMissingError, InvalidCheckpointError
from vopstore.prompts.registry import build_method

TEXT_KEY = "text_prompt_learner.text_prompts"
VISUAL_KEY = "visual_prompt_learner.visual_prompts"
CLIP_PREFIX = "clip."
SHARED_PREFIXES = ("image_encoder.", "text_encoder.")  # the CLIP's own modules, saved a second time
WRAPPER_PREFIX = "module."  # DataParallel / DDP


@dataclass
class ReleasedCheckpoint:
    """What an authors' checkpoint holds, in vopstore's shapes.

    Attributes:
        text: (L_t, P, D_t) text prompts, prefix half first.
        visual: (L_v, P_v, D_v) visual prompts (the frame dimension of size 1 dropped).
        clip: the OpenAI-layout CLIP state dict, without its ``clip.`` prefix.
        source: the file, for messages.
    """

    text: torch.Tensor
    visual: torch.Tensor
    clip: dict[str, torch.Tensor]
    source: str


def read_modelscope(path: str | os.PathLike) -> ReleasedCheckpoint:
    """Read ``VoP_msrvtt9k.pth`` (or a file in its layout) without running any pickled code.

    Raises:
        FileMissingError: no such file.
        InvalidCheckpointError: not a PyTorch checkpoint, a key missing or unknown, a prompt of the wrong shape.
    """
    source = str(path)
    state = _state_dict(_load(Path(path)), source)
    state = {k.removeprefix(WRAPPER_PREFIX): v for k, v in state.items()}
    missing = [key for key in (TEXT_KEY, VISUAL_KEY) if key not in state]
    if missing:
        raise InvalidCheckpointError(f"{source}: no {' or '.join(repr(k) for k in missing)}; not a VoP checkpoint "
                                     "in the authors' (ModelScope) layout")
    unknown = sorted(k for k in state if k not in (TEXT_KEY, VISUAL_KEY)
                     and not k.startswith((CLIP_PREFIX, *SHARED_PREFIXES)))
    if unknown:
        raise InvalidCheckpointError(f"{source}: unknown key(s) {', '.join(unknown[:4])}; only basic VoP "
                                     "checkpoints (text and visual prompts plus CLIP) can be imported")
    clip = {k.removeprefix(CLIP_PREFIX): v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    if not clip:
        raise InvalidCheckpointError(f"{source}: no 'clip.*' weights: the CLIP it was trained on must be in the file")
    return ReleasedCheckpoint(text=_text(state[TEXT_KEY], source), visual=_visual(state[VISUAL_KEY], source),
                              clip=clip, source=source)


def _load(path: Path) -> Any:
    if not path.is_file():
        raise FileMissingError(f"{path}: no such checkpoint file; pass the path of the authors' .pth file")
    try:  # weights_only: tensors and plain containers only, never arbitrary pickled objects
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip, runtime and EOF errors for files it cannot read
        reason = " ".join(str(exc).split())[:160]
        raise InvalidCheckpointError(f"{path}: not a PyTorch checkpoint that loads without code ({reason})") from None


def _state_dict(raw: Any, source: str) -> dict[str, torch.Tensor]:
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise InvalidCheckpointError(f"{source}: holds a {type(state).__name__}, not a state dict of named tensors")
    return state


def _text(tensor: Any, source: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3 or tensor.shape[1] % 2:
        raise InvalidCheckpointError(f"{source}: {TEXT_KEY} must be (layers, an even number of prompts, width), "
                                     f"got {_shape(tensor)}")
    return tensor


def _visual(tensor: Any, source: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4 or tensor.shape[1] != 1:
        raise InvalidCheckpointError(f"{source}: {VISUAL_KEY} must be (layers, 1, prompts, width), "
                                     f"got {_shape(tensor)}")
    return tensor[:, 0]


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def released_prompt_set(checkpoint: ReleasedCheckpoint, backbone: Any) -> Any:
    """The checkpoint's prompts as a ``vop`` prompt set with the ``released`` text layout, on ``backbone``.

    Raises:
        InvalidCheckpointError: the prompts do not fit the backbone (widths, or more layers than it has).
    """
    config = backbone.model.config
    text_layers, visual_layers = config.text_config.num_hidden_layers, config.vision_config.num_hidden_layers
    for name, prompts, layers, width in (
            (TEXT_KEY, checkpoint.text, text_layers, config.text_config.hidden_size),
            (VISUAL_KEY, checkpoint.visual, visual_layers, config.vision_config.hidden_size)):
        if prompts.shape[0] > layers or prompts.shape[-1] != width:
            raise InvalidCheckpointError(f"{checkpoint.source}: {name} has shape {tuple(prompts.shape)}; its CLIP "
                                         f"has {layers} layers of width {width}")
    method = build_method("vop", backbone, text_layout="released", text_prompts=checkpoint.text.shape[1],
                          visual_prompts=checkpoint.visual.shape[1],
                          text_depth=_depth(checkpoint.text, text_layers),
                          visual_depth=_depth(checkpoint.visual, visual_layers))
    method.load_state_dict({"text": checkpoint.text, "visual": checkpoint.visual}, strict=True)
    return method


def _depth(prompts: torch.Tensor, layers: int) -> int | None:
    """None (every layer, the config's default) when the checkpoint prompts them all."""
    return None if prompts.shape[0] == layers else prompts.shape[0]
