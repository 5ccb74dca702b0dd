"""Prompt keys and values that depend only on the task, computed once when a prompt set is loaded.

* text, ``prefix`` layout: under the causal mask SOT and the n prompts (positions 0..n)
  never see the caption, so their keys and values at every layer are constants of the
  prompt set. A request then runs only its caption tokens.
* video: a prompt that enters layer l fresh has key ``W_k·LN1(P_l)`` and value
  ``W_v·LN1(P_l)`` (layer 0's prompts through ``pre_layrnorm`` first). The tensors a
  method lists in ``cached_prompts`` are such prompts (VoP^F's video-level prompts of
  the inter-frame layers included); prompts generated from the frames (VoP^C) are not.

The cache of one prompt set is a dict of tensors stored in the bank next to its
prompts (stacked per group, gathered per row, evicted with its task), each holding
keys and values side by side in its last dimension (one gather per request). A request
assembles each row's keys exactly as the method assembles its prompts: the methods
only gather, repeat and concatenate prompt tokens (never mix them) and the key and
value maps act on each token alone, so handing the method the keys in place of the
prompts yields the rows' keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import torch

from vopstore.prompts.base import gather
from vopstore.prompts.block import KeysValues, activation_of, layer_kv, run_block
from vopstore.prompts.forward import TextPrompts
from vopstore.runtime.bank import PROMPTS, family, group_key

INTER_FRAME = "video"  # VoP^F's video-level prompts: row j enters layer k_shallow + j


def with_caches(backbone: Any, prepared: list, files: Any = None) -> list:
    """The prepared sets (``vopstore.runtime.loader.Prepared``) with their caches and bytes.

    A set whose cache ``files`` (:class:`~vopstore.runtime.cache_files.CacheFiles`) hold is
    read from there; the others are computed, one batched computation per (method, config)
    that reads the towers' weights once however many sets load together, and written to
    ``files``. Baselines have nothing to cache (no prompt tokens: every key and value depends
    on the request) and pass through unchanged.
    """
    out, missing = read_kept(prepared, files)
    return with_computed_caches(backbone, out, missing, files)


def with_computed_caches(backbone: Any, prepared: list, indices: Iterable[int], files: Any = None) -> list:
    """The prepared sets with the caches of ``prepared[indices]`` (prompt sets) computed and written to ``files``."""
    out, by_group = list(prepared), {}
    for i in indices:
        by_group.setdefault(group_key(out[i].method_cls.name, out[i].config), []).append(i)
    for rows in by_group.values():
        first = prepared[rows[0]]
        stacked = {name: torch.stack([prepared[i].tensors[name] for i in rows]) for name in first.tensors}
        cache = build_cache(backbone, first.method_cls, first.config, stacked)
        for s, i in enumerate(rows):
            out[i] = _with_cache(prepared[i], {name: tensor[s] for name, tensor in cache.items()})
            if files:
                files.write(prepared[i].info.digest, out[i].cache)
    return out


def read_kept(prepared: list, files: Any = None) -> tuple[list, list[int]]:
    """The prepared sets with the caches ``files`` hold, and the indices of the prompt sets still
    without one (to compute)."""
    out, missing = list(prepared), []
    for i, item in enumerate(prepared):
        if family(item.method_cls) != PROMPTS:
            continue
        kept = files.read(item.info.digest, cache_names(item.method_cls, item.config)) if files else None
        if kept is not None:
            out[i] = _with_cache(item, kept)
        else:
            missing.append(i)
    return out, missing


def _with_cache(item: Any, cache: dict) -> Any:
    extra = tensor_bytes(cache)
    return dataclasses.replace(item, cache=cache, nbytes=item.nbytes + extra, cache_bytes=extra)


def cache_names(method_cls: Any, config: Any) -> set[str]:
    """The names of the tensors :func:`build_cache` makes for a set of ``method_cls`` with ``config``."""
    names = {"text.kv"} if config.text_layout == "prefix" else set()
    return names | {f"{name}.kv" for name in getattr(method_cls, "cached_prompts", ())}


def build_cache(backbone: Any, method_cls: Any, config: Any, tensors: Mapping[str, torch.Tensor]) -> dict:
    """The caches of S prompt sets of one method and config (``tensors``: {name: (S, ...)}).

    Returns {name + ".kv": (S, ...)} with keys and values side by side in the last dimension.
    """
    cache = {}
    with torch.no_grad():
        if config.text_layout == "prefix":
            cache["text.kv"] = torch.cat(text_prefix_kv(backbone, tensors["text"]), dim=-1)
        for name in getattr(method_cls, "cached_prompts", ()):
            first = config.k_shallow if name == INTER_FRAME else 0
            per_layer = tensors[name].movedim(1, 0)  # (layers, S, ..., D)
            cache[f"{name}.kv"] = torch.cat(vision_prompt_kv(backbone, per_layer, first), dim=-1).movedim(0, 1)
    return cache


def halves(kv: torch.Tensor) -> KeysValues:
    """(keys, values) from a tensor holding them side by side in its last dimension."""
    width = kv.shape[-1] // 2
    return kv[..., :width], kv[..., width:]


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
    if "text.kv" not in view.cache:
        return view.method_cls.text_prompts(view.config, view.tensors, index)
    return TextPrompts(prompts=None, layout=view.config.text_layout, cache=halves(gather(view.cache["text.kv"], index)))


def video_prompts(view: Any, index: torch.Tensor, frames: int) -> Any:
    """Per-row visual prompts of a bank group, with the cached keys and values attached."""
    method_cls, config, tensors = view.method_cls, view.config, view.tensors
    prompts = method_cls.video_prompts(config, tensors, index, frames)
    names = [name for name in getattr(method_cls, "cached_prompts", ()) if f"{name}.kv" in view.cache]
    if not names:
        return prompts
    kv = method_cls.video_prompts(config, {**tensors, **{n: view.cache[f"{n}.kv"] for n in names}}, index, frames)
    if any(name != INTER_FRAME for name in names):
        prompts.shallow_kv = lambda layer: halves(kv.shallow(layer, None))
    if INTER_FRAME in names:
        prompts.video_kv = halves(kv.video)
    return prompts
