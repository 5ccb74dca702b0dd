"""VoP^C: context-specific video prompts generated from the frames' [CLS] tokens, so they follow the content.

At each intra-frame layer the F [CLS] tokens of a video (raw residual stream, the
layer's input) go through a 1-layer BiLSTM (the cross-modal module, CMM) and a
fully connected layer that stretches each output to 4 prompt tokens; these join
4 learned, frame-agnostic tokens of that layer. The BiLSTM and FC are shared by
all layers. The CLS tokens themselves are not modified.
"""

from __future__ import annotations

import threading

import torch
from torch import nn
from torch.func import functional_call

from vopstore.prompts.base import PromptMethod, gather, normal_param, per_frame
from vopstore.prompts.configs import VopCConfig
from vopstore.prompts.forward import VideoPrompts

_templates = threading.local()


def _lstm_template(width: int, hidden: int) -> nn.LSTM:
    """A weightless BiLSTM whose forward runs with any set's tensors via functional_call.

    functional_call swaps tensors into the module for the duration of the call, so a
    template shared between serving threads is not safe: each thread keeps its own.
    """
    cache = _templates.__dict__.setdefault("by_size", {})
    if (width, hidden) not in cache:
        cache[width, hidden] = nn.LSTM(width, hidden, num_layers=1, bidirectional=True, batch_first=True,
                                       device="meta")
    return cache[width, hidden]


def generate(tensors: dict, set_index: torch.Tensor, cls_tokens: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Prompts (B, F, n, D) from the CLS tokens (B, F, D), each video with its own set's CMM + FC."""
    batch, frames, width = cls_tokens.shape
    weight = tensors["fc.weight"]
    hidden = weight.shape[-1] // 2
    sets = [0] if weight.shape[0] == 1 else set_index.unique().tolist()
    out = None
    for s in sets:
        rows = torch.arange(batch, device=cls_tokens.device) if len(sets) == 1 else (set_index == s).nonzero()[:, 0]
        lstm = {k.removeprefix("cmm."): v[s] for k, v in tensors.items() if k.startswith("cmm.")}
        x = cls_tokens[rows].to(weight.dtype)
        y = functional_call(_lstm_template(width, hidden), lstm, (x,))[0]
        y = torch.nn.functional.linear(y, weight[s], tensors["fc.bias"][s]).view(len(rows), frames, n_tokens, width)
        if len(sets) == 1:
            return y
        out = y.new_zeros(batch, frames, n_tokens, width) if out is None else out
        out = out.index_copy(0, rows, y)
    return out


class VopC(PromptMethod):
    """VoP^C: ``text``, ``generic`` (L_v, 4, 768), ``cmm`` BiLSTM(768->768x2), ``fc`` (1536->4x768); 14,257,152."""

    name = "vop-c"
    summary = "4 learned + 4 BiLSTM-generated visual prompts"
    config_class = VopCConfig
    cached_prompts = ()  # half of each layer's prompts are generated from the frames

    def _build_visual(self) -> None:
        cfg, width, depth = self.config, self.dims.vision_width, self.visual_depth()
        hidden = cfg.cmm_hidden or width
        self.generic = normal_param((depth, cfg.generic_prompts, width), cfg.init_std)
        self.cmm = nn.LSTM(width, hidden, num_layers=1, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden, cfg.generated_prompts * width)
        # The paper gives no init for the FC; prompt-like N(0, init_std) keeps generated tokens small at start.
        nn.init.normal_(self.fc.weight, std=cfg.init_std)
        nn.init.zeros_(self.fc.bias)

    @classmethod
    def video_prompts(cls, config, tensors, set_index, frames):
        generic = gather(tensors["generic"], set_index)  # (B, depth, 4, D)
        n_gen = config.generated_prompts

        def shallow(layer, hidden):
            cls_tokens = hidden[:, 0].view(-1, frames, hidden.shape[-1])
            made = generate(tensors, set_index, cls_tokens, n_gen).reshape(-1, n_gen, hidden.shape[-1])
            return torch.cat([per_frame(generic[:, layer], frames), made.to(hidden.dtype)], dim=1)

        return VideoPrompts(n_prompts=generic.shape[2] + n_gen, shallow=shallow, shallow_depth=generic.shape[1])
