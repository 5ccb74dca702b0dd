"""One pre-LN CLIP block run from its submodules, with extra keys and values for tokens not computed.

transformers' encoder forward changed its signature between v4 and v5, so the
blocks are run here from ``layer_norm1``, ``self_attn.{q,k,v,out}_proj``,
``layer_norm2``, ``mlp.fc1/fc2`` and the config's activation, with torch's
``scaled_dot_product_attention``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

# keys and values (N, m, D) of m tokens that the rows attend to without being computed themselves
KeysValues = tuple[torch.Tensor, torch.Tensor]



def run_block(layer: Any, hidden: torch.Tensor, activation: Callable, causal: bool = False,
              extra: KeysValues | None = None, at: int = 0, mask: torch.Tensor | None = None,
              keep: slice | torch.Tensor | None = None) -> torch.Tensor:
    """One pre-LN CLIP block from its submodules: attention then MLP, both residual.

    Args:
        extra: keys and values (B, m, D) of tokens the rows attend to but that are not
            computed here, placed at sequence index ``at`` among the rows' own keys.
        mask: (rows, rows + m) boolean, True where a row may attend (instead of ``causal``).
        keep: the rows whose output is needed (a slice, or one row index per sequence (B,));
            only they get queries, attention outputs and MLP, every row gives keys and values.
            Returns (B, kept rows, D) then.
    """
    attn = layer.self_attn
    x = layer.layer_norm1(hidden)
    width = x.shape[-1]
    heads = attn.num_heads
    keys, values = attn.k_proj(x), attn.v_proj(x)
    if extra is not None:
        keys = torch.cat([keys[:, :at], extra[0].to(keys.dtype), keys[:, at:]], dim=1)
        values = torch.cat([values[:, :at], extra[1].to(values.dtype), values[:, at:]], dim=1)
    if keep is not None:
        mask = _kept_mask(mask, causal, keep, keys.shape[1], x.device)
        causal = False
        hidden, x = _kept(hidden, keep), _kept(x, keep)
    batch, length = x.shape[:2]

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, t.shape[1], heads, width // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(attn.q_proj(x)), split(keys), split(values), attn_mask=mask,
                                         is_causal=causal and mask is None, scale=attn.scale)
    hidden = hidden + attn.out_proj(out.transpose(1, 2).reshape(batch, length, width))
    x = layer.layer_norm2(hidden)
    return hidden + layer.mlp.fc2(activation(layer.mlp.fc1(x)))


def _kept(rows: torch.Tensor, keep: slice | torch.Tensor) -> torch.Tensor:
    if isinstance(keep, slice):
        return rows[:, keep]
    return rows[torch.arange(rows.shape[0], device=rows.device), keep].unsqueeze(1)


def _kept_mask(mask: torch.Tensor | None, causal: bool, keep: slice | torch.Tensor, keys: int,
               device: Any) -> torch.Tensor | None:
    """The attention mask of the kept rows: (kept, keys) for a slice, (B, 1, 1, keys) per sequence."""
    if mask is None and causal:  # no extra keys here: the rows are the keys, in order
        mask = torch.ones(keys, keys, dtype=torch.bool, device=device).tril()
    if mask is None:
        return None
    if isinstance(keep, slice):
        return mask[keep]
    return mask[keep.to(device)][:, None, None, :]


def layer_kv(layer: Any, hidden: torch.Tensor) -> KeysValues:
    """The keys and values ``layer`` makes of ``hidden`` (..., D): what other rows read of these tokens."""
    x = layer.layer_norm1(hidden)
    return layer.self_attn.k_proj(x), layer.self_attn.v_proj(x)


def discarded_after(layer: int, depth: int, last: int) -> bool:
    """Whether the fresh prompts of ``layer`` have an output nobody reads.

    Prompts are fresh at layers < ``depth``; their output is read only by a layer that
    keeps the slots (``depth <= layer + 1 < last``, ``last`` being the end of the prompted layers).
    """
    return layer < depth and not depth <= layer + 1 < last


def activation_of(config: Any) -> Callable:
    """The activation function a CLIP tower config names (``hidden_act``)."""
    from transformers.activations import ACT2FN

    return ACT2FN[config.hidden_act]
