"""CLIP's two towers written from their parameters, so that any weight can be replaced or joined per forward.

A baseline never modifies the frozen backbone (other tasks keep seeing its weights,
and no forward swaps tensors into a module another thread may be running). Instead
the towers are computed here with ``torch.nn.functional`` from the backbone's
parameters, and :class:`Overrides` says which ones a forward uses instead:

* ``params``: backbone parameter name -> tensor used instead of the backbone's.
* ``adapters``: per tower, bottleneck adapters stacked by layer, added in parallel to
  the attention or MLP block.

Without ``rows`` every override is shared by the whole batch (training, one version).
With ``rows`` (a :class:`Rows` over a per-row ``set_index``) every override carries a
leading **set dimension** S and row b uses set ``set_index[b]`` (a video's F frames use
its row): versions of bias, proj or adapters then share one forward, as a gathered
per-row add and a matmul per set present in the batch. Versions of *different* baselines
share one forward too (:func:`vopstore.baselines.rows.mixed_overrides`): ``param_rows``
gives a replaced weight its own per-row index, and each :class:`AdapterRows` adds its
adapters to its member rows only.

With no overrides the result equals ``CLIPModel.get_text_features`` /
``get_image_features`` (pooled at the first EOT token, as vopstore.prompts does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

TEXT, VISION = "text_model", "vision_model"


class Rows:
    """Which stacked set each row of a batch uses; the per-set row groups are found once per forward."""

    def __init__(self, set_index: torch.Tensor) -> None:
        self.index = set_index
        self._groups: list[tuple[int, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return self.index.shape[0]

    def gather(self, stacked: torch.Tensor) -> torch.Tensor:
        """(S, ...) -> (B, ...): each row's value."""
        return stacked[self.index.to(stacked.device)]

    def groups(self, device: torch.device) -> list[tuple[int, torch.Tensor]]:
        """[(set, row indices)] for every set present in the batch (one host sync, then cached)."""
        if self._groups is None:
            index = self.index.to(device)
            self._groups = [(s, (index == s).nonzero()[:, 0]) for s in index.unique().tolist()]
        return self._groups


@dataclass
class AdapterRows:
    """Adapters that only some rows of a batch use, each member row its own set (one adapter method and config).

    Attributes:
        adapters: "text" / "vision" -> {"down.weight" (S, L, h, D), ...} as in :class:`Overrides`.
        position: "attn" or "ffn"; scale: the factor on the branch.
        members: (M,) the rows of the batch that use these adapters.
        rows: which set each member uses (M rows).
        batch: how many rows the whole batch has (a video row spans its frames).
    """

    adapters: Mapping[str, Mapping[str, torch.Tensor]]
    position: str
    scale: float
    members: torch.Tensor
    rows: Rows
    batch: int


@dataclass
class Overrides:
    """What replaces or joins the frozen backbone's weights in one forward (see the module docstring).

    Attributes:
        params: backbone parameter name -> tensor used instead (its shape, or (S, *shape) with ``rows``).
        adapters: "text" / "vision" -> {"down.weight" (L, h, D), "down.bias" (L, h), "up.weight"
            (L, D, h), "up.bias" (L, D)}, each with a leading S with ``rows``.
        position: where the adapters sit: "attn" (parallel to self-attention) or "ffn" (to the MLP).
        scale: the factor on the adapter branch.
        rows: None (overrides shared by every row), or which set each row uses.
        param_rows: parameter name -> which set of ``params[name]`` each row uses, where that
            differs from ``rows`` (a mix of baselines that replace different weights).
        adapter_rows: adapters that only some rows use (a mix of adapter methods and configs).
    """

    params: Mapping[str, torch.Tensor] = field(default_factory=dict)
    adapters: Mapping[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)
    position: str = "attn"
    scale: float = 1.0
    rows: Rows | None = None
    param_rows: Mapping[str, Rows] = field(default_factory=dict)
    adapter_rows: Sequence[AdapterRows] = ()


# --- linear algebra where a tensor with one more dimension than the parameter is stacked over sets ----------


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           rows: Rows | None = None, bias_rows: Rows | None = None) -> torch.Tensor:
    """``x @ weight.T + bias``; with ``rows``, ``weight`` may be (S, out, in) and ``bias`` (S, out)
    (``bias_rows``: the bias's own per-row sets, when they are not ``rows``)."""
    if weight.dim() == 2 and (bias is None or bias.dim() == 1):
        return F.linear(x, weight, bias)
    y = F.linear(x, weight) if weight.dim() == 2 else _matmul_per_set(x, weight, rows)
    if bias is None:
        return y
    bias_rows = rows if bias_rows is None else bias_rows
    return y + bias if bias.dim() == 1 else _per_row(y, bias_rows.gather(bias), torch.add)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
               rows: Rows | None = None, bias_rows: Rows | None = None) -> torch.Tensor:
    """LayerNorm over the last dimension; with ``rows``, ``weight`` / ``bias`` may be (S, D)."""
    width = x.shape[-1:]
    if weight.dim() == 1 and bias.dim() == 1:
        return F.layer_norm(x, width, weight, bias, eps)
    y = F.layer_norm(x, width, weight if weight.dim() == 1 else None, None, eps)
    if weight.dim() == 2:
        y = _per_row(y, rows.gather(weight), torch.mul)
    bias_rows = rows if bias_rows is None else bias_rows
    return y + bias if bias.dim() == 1 else _per_row(y, bias_rows.gather(bias), torch.add)


def _per_row(y: torch.Tensor, value: torch.Tensor, op: Callable) -> torch.Tensor:
    """``op(y, value)`` where row b of ``value`` (B, D) applies to the b-th of B equal groups of ``y``'s rows."""
    batch = value.shape[0]
    return op(y.reshape(batch, -1, y.shape[-1]), value.unsqueeze(1)).reshape(y.shape)


def _matmul_per_set(x: torch.Tensor, weight: torch.Tensor, rows: Rows) -> torch.Tensor:
    """Each row's ``x @ weight[set].T``: one matmul per set present (no (B, out, in) gather)."""
    grouped = x.reshape(len(rows), -1, x.shape[-1])
    out = grouped.new_empty(*grouped.shape[:-1], weight.shape[1])
    for s, members in rows.groups(x.device):
        out[members] = F.linear(grouped[members], weight[s]).to(out.dtype)
    return out.reshape(*x.shape[:-1], weight.shape[1])


# --- the towers ------------------------------------------------------------------------------------------------


class _Weights:
    """Parameter lookup (the override if there is one, else the frozen backbone's own tensor) and its layers."""

    def __init__(self, model: Any, overrides: Overrides) -> None:
        self.own, self.params, self.rows = dict(model.named_parameters()), overrides.params, overrides.rows
        self.param_rows = overrides.param_rows

    def __call__(self, name: str) -> torch.Tensor:
        found = self.params.get(name)
        return found if found is not None else self.own[name]

    def rows_of(self, name: str) -> Rows | None:
        return self.param_rows.get(name, self.rows)

    def linear(self, x: torch.Tensor, prefix: str, bias: bool = True) -> torch.Tensor:
        return linear(x, self(f"{prefix}.weight"), self(f"{prefix}.bias") if bias else None,
                      self.rows_of(f"{prefix}.weight"), self.rows_of(f"{prefix}.bias"))

    def norm(self, x: torch.Tensor, prefix: str, config: Any) -> torch.Tensor:
        return layer_norm(x, self(f"{prefix}.weight"), self(f"{prefix}.bias"), config.layer_norm_eps,
                          self.rows_of(f"{prefix}.weight"), self.rows_of(f"{prefix}.bias"))


def text_features(backbone: Any, input_ids: torch.Tensor, overrides: Overrides | None = None) -> torch.Tensor:
    """Projected text embeddings (B, P), NOT normalised, pooled at each text's first EOT token."""
    overrides = overrides or Overrides()
    model = backbone.model
    w = _Weights(model, overrides)
    ids = input_ids.to(model.text_projection.weight.device)
    eot = (ids == backbone.eot_token_id).int().argmax(-1)
    x = F.embedding(ids, w(f"{TEXT}.embeddings.token_embedding.weight"))
    x = x + w(f"{TEXT}.embeddings.position_embedding.weight")[: ids.shape[1]]
    x = _encoder(x, w, overrides, model.config.text_config, "text", causal=True)
    x = w.norm(x[torch.arange(x.shape[0], device=x.device), eot], f"{TEXT}.final_layer_norm",
               model.config.text_config)
    return w.linear(x, "text_projection", bias=False)


def frame_features(backbone: Any, pixel_values: torch.Tensor, overrides: Overrides | None = None) -> torch.Tensor:
    """Projected per-frame embeddings (B, F, P), NOT normalised; ``pixel_values`` (B, F, 3, H, W)."""
    overrides = overrides or Overrides()
    model = backbone.model
    config = model.config.vision_config
    w = _Weights(model, overrides)
    batch, frames = pixel_values.shape[:2]
    patches = w(f"{VISION}.embeddings.patch_embedding.weight")
    pixels = pixel_values.reshape(batch * frames, *pixel_values.shape[2:]).to(patches.device, patches.dtype)
    x = F.conv2d(pixels, patches, stride=config.patch_size).flatten(2).transpose(1, 2)
    cls = w(f"{VISION}.embeddings.class_embedding").expand(x.shape[0], 1, -1)
    x = torch.cat([cls.to(x.dtype), x], dim=1) + w(f"{VISION}.embeddings.position_embedding.weight")
    x = w.norm(x, f"{VISION}.pre_layrnorm", config)
    x = _encoder(x, w, overrides, config, "vision", causal=False)
    x = w.norm(x[:, 0], f"{VISION}.post_layernorm", config)
    return w.linear(x, "visual_projection", bias=False).view(batch, frames, -1)


def _encoder(x: torch.Tensor, w: _Weights, overrides: Overrides, config: Any, tower: str,
             causal: bool) -> torch.Tensor:
    from transformers.activations import ACT2FN

    act = ACT2FN[config.hidden_act]
    prefix = TEXT if tower == "text" else VISION
    for i in range(config.num_hidden_layers):
        x = _block(x, w, f"{prefix}.encoder.layers.{i}", config, act, causal, _branches(overrides, tower, i))
    return x


Branch = tuple[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]  # (position, (input, output) -> output)


def _branches(overrides: Overrides, tower: str, layer: int) -> list[Branch]:
    """The adapters of ``layer``: (where each sits, what it makes of its sublayer's input and output)."""
    found = []
    adapters = overrides.adapters.get(tower)
    if adapters is not None:
        branch = _adapter_branch(adapters, layer, overrides)
        found.append((overrides.position, lambda h, out: out + branch(h)))
    found += [(group.position, _members_branch(group, tower, layer))
              for group in overrides.adapter_rows if tower in group.adapters]
    return found


def _block(x: torch.Tensor, w: _Weights, prefix: str, config: Any, act: Callable, causal: bool,
           branches: list[Branch]) -> torch.Tensor:
    """One pre-LN CLIP block; each branch (an adapter) runs on the same input as the sublayer it sits beside."""
    h = w.norm(x, f"{prefix}.layer_norm1", config)
    out = _attention(h, w, f"{prefix}.self_attn", config.num_attention_heads, causal)
    for position, branch in branches:
        if position == "attn":
            out = branch(h, out)
    x = x + out
    h = w.norm(x, f"{prefix}.layer_norm2", config)
    out = w.linear(act(w.linear(h, f"{prefix}.mlp.fc1")), f"{prefix}.mlp.fc2")
    for position, branch in branches:
        if position == "ffn":
            out = branch(h, out)
    return x + out


def _attention(h: torch.Tensor, w: _Weights, prefix: str, heads: int, causal: bool) -> torch.Tensor:
    batch, length, width = h.shape

    def split(name: str) -> torch.Tensor:
        return w.linear(h, f"{prefix}.{name}").view(batch, length, heads, width // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split("q_proj"), split("k_proj"), split("v_proj"), is_causal=causal,
                                         scale=(width // heads) ** -0.5)
    return w.linear(out.transpose(1, 2).reshape(batch, length, width), f"{prefix}.out_proj")


def _adapter_branch(tensors: Mapping[str, torch.Tensor], layer: int, overrides: Overrides) -> Callable:
    """``scale * up(relu(down(h)))`` with layer ``layer``'s adapter (shared, or stacked over sets)."""
    rows = overrides.rows

    def pick(name: str) -> torch.Tensor:
        return tensors[name][layer] if rows is None else tensors[name][:, layer]

    def branch(h: torch.Tensor) -> torch.Tensor:
        z = F.relu(linear(h, pick("down.weight"), pick("down.bias"), rows))
        return overrides.scale * linear(z, pick("up.weight"), pick("up.bias"), rows).to(h.dtype)

    return branch


def _members_branch(group: AdapterRows, tower: str, layer: int) -> Callable:
    """Add ``group``'s adapter of ``layer`` to its member rows' sublayer output; the other rows keep theirs."""
    tensors = group.adapters[tower]

    def pick(name: str) -> torch.Tensor:
        return tensors[name][:, layer]

    def apply(h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        per_row = h.reshape(group.batch, -1, h.shape[-1])  # a video row's frames stay together
        members = group.members.to(h.device)
        z = F.relu(linear(per_row[members], pick("down.weight"), pick("down.bias"), group.rows))
        delta = group.scale * linear(z, pick("up.weight"), pick("up.bias"), group.rows)
        return out.reshape(per_row.shape).index_add(0, members, delta.to(out.dtype)).reshape(out.shape)

    return apply
