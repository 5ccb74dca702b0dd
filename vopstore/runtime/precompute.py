"""Prompt keys and values that depend only on the task, computed once when a prompt set is loaded.

* text, ``prefix`` layout: under the causal mask SOT and the n prompts (positions 0..n)
  never see the caption, so their keys and values at every layer are constants of the
  prompt set. A request then runs only its caption tokens.
* video: a prompt that enters layer l fresh has key ``W_k·LN1(P_l)`` and value
  ``W_v·LN1(P_l)`` (layer 0's prompts through ``pre_layrnorm`` first). The tensors a
  method lists in ``cached_prompts`` are such prompts (VoP^F's video-level prompts of
  the inter-frame layers included); prompts generated from the frames (VoP^C) are not.

The cache of one prompt set is a dict of tensors stored in the bank next to its
prompts (stacked per group, gathered per row, evicted with its task). A request
assembles each row's keys exactly as the method assembles its prompts: the methods
only gather, repeat and concatenate prompt tokens (never mix them) and the key and
value maps act on each token alone, so handing the method the keys in place of the
prompts yields the rows' keys.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from vopstore.prompts.base import gather
from vopstore.prompts.block import KeysValues, activation_of, layer_kv, run_block
from vopstore.prompts.forward import TextPrompts

INTER_FRAME = "video"  # VoP^F's video-level prompts: row j enters layer k_shallow + j


def build_cache(backbone: Any, method_cls: Any, config: Any, tensors: Mapping[str, torch.Tensor]) -> dict:
    """The cache of ONE prompt set (``tensors`` without a set dimension): {name: tensor}."""
    cache = {}
    with torch.no_grad():
        if config.text_layout == "prefix":
            keys, values = text_prefix_kv(backbone, tensors["text"].unsqueeze(0))
            cache["text.keys"], cache["text.values"] = keys[0], values[0]
        for name in getattr(method_cls, "cached_prompts", ()):
            first = config.k_shallow if name == INTER_FRAME else 0
            cache[f"{name}.keys"], cache[f"{name}.values"] = vision_prompt_kv(backbone, tensors[name], first)
    return cache


def tensor_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def text_prefix_kv(backbone: Any, prompts: torch.Tensor) -> KeysValues:
    """Keys and values (S, layers, 1 + n, D) of SOT and the n prompts at every text layer.

    ``prompts`` (S, depth, n, D) are ``prefix``-layout text prompts; SOT and the prompts run
    alone, causally, exactly as they run in front of any caption (fresh prompts at the
    layers < depth, later layers keep what the previous one wrote).
    """
    text = backbone.model.text_model
    layers = text.encoder.layers
    depth = prompts.shape[1]
    weight = text.embeddings.token_embedding.weight
    sot = weight[backbone.tokenizer.bos_token_id].expand(prompts.shape[0], 1, -1)
    x = torch.cat([sot, prompts[:, 0].to(weight.dtype)], dim=1)
    x = x + text.embeddings.position_embedding.weight[: x.shape[1]]
    act = activation_of(backbone.model.config.text_config)
    keys, values = [], []
    for i, layer in enumerate(layers):
        if 0 < i < depth:
            x = torch.cat([x[:, :1], prompts[:, i].to(x.dtype)], dim=1)
        k, v = layer_kv(layer, x)
        keys.append(k)
        values.append(v)
        if i + 1 < len(layers):
            x = run_block(layer, x, act, causal=True)
    return torch.stack(keys, dim=1), torch.stack(values, dim=1)


def vision_prompt_kv(backbone: Any, prompts: torch.Tensor, first_layer: int) -> KeysValues:
    """Keys and values of fresh vision prompts: ``prompts[j]`` (..., D) enters layer ``first_layer + j``.

    Returns two tensors shaped like ``prompts``.
    """
    vision = backbone.model.vision_model
    keys, values = [], []
    for j in range(prompts.shape[0]):
        content = prompts[j].to(backbone.dtype)
        if first_layer + j == 0:  # layer-0 prompts go through pre_layrnorm, as in the forward
            content = vision.pre_layrnorm(content)
        k, v = layer_kv(vision.encoder.layers[first_layer + j], content)
        keys.append(k)
        values.append(v)
    return torch.stack(keys), torch.stack(values)


# --- reading the cache for a batch -------------------------------------------------------------------------------


def text_prompts(view: Any, index: torch.Tensor) -> TextPrompts:
    """Per-row text prompts of a bank group: from the cache when it has the text keys, else the method's."""
    if "text.keys" not in view.cache:
        return view.method_cls.text_prompts(view.config, view.tensors, index)
    cache = (gather(view.cache["text.keys"], index), gather(view.cache["text.values"], index))
    return TextPrompts(prompts=None, layout=view.config.text_layout, cache=cache)


def video_prompts(view: Any, index: torch.Tensor, frames: int) -> Any:
    """Per-row visual prompts of a bank group, with the cached keys and values attached."""
    method_cls, config, tensors = view.method_cls, view.config, view.tensors
    prompts = method_cls.video_prompts(config, tensors, index, frames)
    names = [name for name in getattr(method_cls, "cached_prompts", ()) if f"{name}.keys" in view.cache]
    if not names:
        return prompts
    keys = method_cls.video_prompts(config, {**tensors, **{n: view.cache[f"{n}.keys"] for n in names}}, index, frames)
    values = method_cls.video_prompts(config, {**tensors, **{n: view.cache[f"{n}.values"] for n in names}}, index,
                                      frames)
    if any(name != INTER_FRAME for name in names):
        prompts.shallow_kv = lambda layer: (keys.shallow(layer, None), values.shallow(layer, None))
    if INTER_FRAME in names:
        prompts.video_kv = (keys.video, values.video)
    return prompts
