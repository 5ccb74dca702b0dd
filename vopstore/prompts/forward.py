"""The prompted CLIP forward, written from the layers' own submodules (:mod:`vopstore.prompts.block`).

With no prompts the result equals ``CLIPModel.get_text_features`` / ``get_image_features``.

Every function takes **per-row** prompts (see the bank contract in
:mod:`vopstore.prompts`), so one forward can serve rows of different prompt sets.

Prompt rows whose output no later layer reads (deep prompts are replaced by fresh
ones at the next layer, dropped before the inter-frame layers, or never pooled) are
not run through the layer: only their keys and values join the attention, so the
real tokens see exactly what they saw before while the prompts' queries, attention
outputs and MLP rows are skipped. ``full_rows=True`` runs the straightforward forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from vopstore.errors import ConfigError
from vopstore.prompts.block import KeysValues, activation_of, discarded_after, layer_kv, run_block

# (layer index, hidden states (B*F, T, D)) -> prompts (B*F, n, D) for an intra-frame layer
ShallowFn = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class TextPrompts:
    """Per-row text prompts.

    Attributes:
        prompts: (B, depth, P, D) learned prompts; None when ``cache`` holds all the rows need.
        layout: 'prefix' or 'released'.
        cache: keys and values (B, layers, 1 + P, D) of SOT and the P prompts at every layer
            (``prefix`` layout only: under the causal mask these tokens never see the caption,
            so they are constants of the prompt set; :mod:`vopstore.runtime.precompute` makes them).
        full_rows: run the prompt rows through every layer like real tokens (the straightforward
            forward, for checks and benchmarks).
    """

    prompts: torch.Tensor | None
    layout: str = "prefix"
    cache: KeysValues | None = None
    full_rows: bool = False

    @property
    def n_prompts(self) -> int:
        return self.cache[0].shape[2] - 1 if self.prompts is None else self.prompts.shape[2]


@dataclass
class VideoPrompts:
    """Per-row visual prompts for a batch of B videos of F frames.

    Attributes:
        n_prompts: prompt slots per frame in the intra-frame layers (inserted after CLS).
        shallow: makes the slots' content for intra-frame layer i from the hidden states.
        shallow_depth: layers 0..shallow_depth-1 get fresh prompts; later intra-frame
            layers keep what the previous layer wrote into the slots.
        k_shallow: None: every layer is intra-frame. Otherwise layers k_shallow.. are
            inter-frame (VoP^F): all frames of a video in one sequence.
        video: (B, L - k_shallow, Pv, D) video-level prompts of the inter-frame layers.
        frame_pos: (B, F, D) frame position embedding added before layer k_shallow.
        shallow_kv: precomputed keys and values (B*F, n, D) of layer i's fresh prompts
            (None: computed from ``shallow``'s output).
        video_kv: precomputed keys and values (B, L - k_shallow, Pv, D) of ``video``.
        full_rows: run the prompt rows through every layer like real tokens.
    """

    n_prompts: int
    shallow: ShallowFn | None
    shallow_depth: int
    k_shallow: int | None = None
    video: torch.Tensor | None = None
    frame_pos: torch.Tensor | None = None
    shallow_kv: Callable[[int], KeysValues] | None = None
    video_kv: KeysValues | None = None
    full_rows: bool = False


# --- text --------------------------------------------------------------------------------------------------------


def encode_text(backbone: Any, input_ids: torch.Tensor, method: Any = None) -> torch.Tensor:
    """Projected text embeddings (B, D), NOT normalised; ``method=None`` is plain CLIP.

    ``input_ids`` come from ``backbone.tokenize(texts, method.text_tokens)``.
    """
    if method is None:
        return text_forward(backbone, input_ids, None)
    index = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
    return encode_text_bank(backbone, input_ids, type(method), method.config, method.prompt_tensors(), index)


def encode_text_bank(backbone: Any, input_ids: torch.Tensor, method_cls: Any, config: Any,
                     tensors: dict[str, torch.Tensor], set_index: torch.Tensor) -> torch.Tensor:
    """Text embeddings (B, D) where row b uses prompt set ``set_index[b]`` of the stacked ``tensors``."""
    return text_forward(backbone, input_ids, method_cls.text_prompts(config, tensors, set_index))


def text_forward(backbone: Any, input_ids: torch.Tensor, prompts: TextPrompts | None) -> torch.Tensor:
    """Run the text tower with deep prompts; pool at the (shifted) first EOT token; project.

    The last layer computes only the pooled row (every row still gives its key and value),
    unless ``prompts.full_rows``.
    """
    model = backbone.model
    ids = input_ids.to(model.text_projection.weight.device)
    n = 0 if prompts is None else prompts.n_prompts
    layout = "prefix" if prompts is None else prompts.layout
    if layout == "released":
        ids = _released_ids(ids, backbone.eot_token_id, backbone.context_length - n)
    if ids.shape[1] + n > backbone.context_length:
        raise ConfigError(f"{ids.shape[1]} token ids + {n} prompts exceed CLIP's {backbone.context_length} "
                          f"positions; tokenize with backbone.tokenize(texts, n_prompts={n})")
    eot = (ids == backbone.eot_token_id).int().argmax(-1)
    if prompts is not None and prompts.cache is not None:
        pooled = _cached_text(backbone, ids, prompts.cache, eot - 1)
    elif n and layout == "prefix" and not prompts.full_rows:
        pooled = _prefix_text(backbone, ids, prompts.prompts, eot)
    else:
        pooled = _full_text(backbone, ids, prompts, eot + n)
    return model.text_projection(model.text_model.final_layer_norm(pooled))


def _full_text(backbone: Any, ids: torch.Tensor, prompts: TextPrompts | None, pool: torch.Tensor) -> torch.Tensor:
    """Every token (prompts included) through every layer; the hidden state (B, D) of row ``pool``."""
    text = backbone.model.text_model
    layers = text.encoder.layers
    n = 0 if prompts is None else prompts.n_prompts
    x = text.embeddings.token_embedding(ids)
    layout = "prefix" if prompts is None else prompts.layout
    if n:
        x = _put_text_prompts(x, prompts.prompts[:, 0].to(x.dtype), layout, inserting=True)
    x = x + text.embeddings.position_embedding.weight[: x.shape[1]]
    act = activation_of(backbone.model.config.text_config)
    depth = 0 if prompts is None else prompts.prompts.shape[1]
    pooled_only = prompts is None or not prompts.full_rows
    for i, layer in enumerate(layers):
        if n and 0 < i < depth:
            x = _put_text_prompts(x, prompts.prompts[:, i].to(x.dtype), layout, inserting=False)
        keep = pool if pooled_only and i == len(layers) - 1 else None
        x = run_block(layer, x, act, causal=True, keep=keep)
    return x[:, 0] if pooled_only else x[torch.arange(x.shape[0], device=x.device), pool]


def _prefix_text(backbone: Any, ids: torch.Tensor, prompts: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """``prefix`` layout, prompts as keys/values while no later layer reads their output; (B, D) at EOT.

    The rows are SOT and the caption (positions 0 and n+1..); each attends, in sequence
    order, to the prompts at positions 1..n as the causal mask allows. The prompts become
    rows at the last fresh layer only when a later layer keeps them (text_depth < layers).
    """
    text = backbone.model.text_model
    layers = text.encoder.layers
    depth, n = prompts.shape[1], prompts.shape[2]
    length = ids.shape[1]
    pos = text.embeddings.position_embedding.weight
    x = text.embeddings.token_embedding(ids) + torch.cat([pos[:1], pos[n + 1 : n + length]])
    positions = torch.cat([torch.zeros(1, device=x.device, dtype=torch.long),
                           torch.arange(n + 1, n + length, device=x.device)])
    mask = positions[:, None] >= torch.arange(n + length, device=x.device)[None]
    act = activation_of(backbone.model.config.text_config)
    pool = eot + n if depth < len(layers) else eot  # the prompts are rows by the last layer iff kept
    for i, layer in enumerate(layers):
        keep = pool if i == len(layers) - 1 else None
        fresh = None if i >= depth else prompts[:, i].to(x.dtype) + (pos[1 : n + 1] if i == 0 else 0)
        if discarded_after(i, depth, len(layers)):
            x = run_block(layer, x, act, extra=layer_kv(layer, fresh), at=1, mask=mask, keep=keep)
            continue
        if fresh is not None:
            x = torch.cat([x[:, :1], fresh, x[:, 1:]], dim=1)
        x = run_block(layer, x, act, causal=True, keep=keep)
    return x[:, 0]


def _cached_text(backbone: Any, ids: torch.Tensor, cache: KeysValues, pool: torch.Tensor) -> torch.Tensor:
    """Only the caption rows (positions 1 + n ..), attending to the cached SOT + prompts first; (B, D) at ``pool``."""
    text = backbone.model.text_model
    layers = text.encoder.layers
    keys, values = cache
    cached = keys.shape[2]
    pos = text.embeddings.position_embedding.weight
    x = text.embeddings.token_embedding(ids[:, 1:]) + pos[cached : cached + ids.shape[1] - 1]
    rows = x.shape[1]
    mask = torch.ones(rows, cached + rows, dtype=torch.bool, device=x.device).tril(cached)
    act = activation_of(backbone.model.config.text_config)
    for i, layer in enumerate(layers):
        keep = pool if i == len(layers) - 1 else None
        x = run_block(layer, x, act, extra=(keys[:, i], values[:, i]), at=0, mask=mask, keep=keep)
    return x[:, 0]


def _released_ids(ids: torch.Tensor, eot_id: int, length: int) -> torch.Tensor:
    """The authors' tokenizer: zeros after EOT, padded to exactly ``77 - n`` ids."""
    if ids.shape[1] > length:
        raise ConfigError(f"{ids.shape[1]} token ids do not fit the released layout's {length}")
    ids = F.pad(ids, (0, length - ids.shape[1]), value=eot_id)
    positions = torch.arange(length, device=ids.device)
    eot = (ids == eot_id).int().argmax(-1, keepdim=True)
    return torch.where(positions > eot, torch.zeros_like(ids), ids)


def _put_text_prompts(x: torch.Tensor, prompts: torch.Tensor, layout: str, inserting: bool) -> torch.Tensor:
    """Insert (layer 0) or overwrite (later layers) the prompt slots."""
    n = prompts.shape[1]
    if layout == "prefix":
        rest = x[:, 1:] if inserting else x[:, 1 + n :]
        return torch.cat([x[:, :1], prompts, rest], dim=1)
    half = n // 2
    if inserting:  # SOT, prefix, ids[1:-1], suffix, ids[-1]: suffix at positions 72..75 of 77
        return torch.cat([x[:, :1], prompts[:, :half], x[:, 1:-1], prompts[:, half:], x[:, -1:]], dim=1)
    end = x.shape[1] - 1
    return torch.cat([x[:, :1], prompts[:, :half], x[:, 1 + half : end - half], prompts[:, half:], x[:, end:]],
                     dim=1)


# --- video -------------------------------------------------------------------------------------------------------


def encode_video(backbone: Any, pixel_values: torch.Tensor, method: Any = None,
                 normalize: bool = False) -> torch.Tensor:
    """Video embeddings (B, D): the mean of the L2-normalised frame embeddings.

    Args:
        pixel_values: (B, F, 3, H, W) preprocessed frames (or (B, 3, H, W) for one frame).
        method: a PromptMethod, or None for zero-shot CLIP.
        normalize: L2-normalise the mean as well (for cosine retrieval).
    """
    return pool_frames(encode_frames(backbone, pixel_values, method), normalize)


def encode_video_bank(backbone: Any, pixel_values: torch.Tensor, method_cls: Any, config: Any,
                      tensors: dict[str, torch.Tensor], set_index: torch.Tensor,
                      normalize: bool = False) -> torch.Tensor:
    """Video embeddings (B, D) where video b uses prompt set ``set_index[b]`` of the stacked ``tensors``."""
    pixel_values = as_video(pixel_values)
    prompts = method_cls.video_prompts(config, tensors, set_index, pixel_values.shape[1])
    return pool_frames(frames_forward(backbone, pixel_values, prompts), normalize)


def encode_frames(backbone: Any, pixel_values: torch.Tensor, method: Any = None) -> torch.Tensor:
    """Projected per-frame embeddings (B, F, D), NOT normalised (F = 1 equals get_image_features)."""
    pixel_values = as_video(pixel_values)
    if method is None:
        return frames_forward(backbone, pixel_values, None)
    index = torch.zeros(pixel_values.shape[0], dtype=torch.long, device=pixel_values.device)
    prompts = type(method).video_prompts(method.config, method.prompt_tensors(), index, pixel_values.shape[1])
    return frames_forward(backbone, pixel_values, prompts)


def pool_frames(frames: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Mean of the L2-normalised frame embeddings (every frame weighs the same), optionally re-normalised."""
    pooled = F.normalize(frames, dim=-1).mean(dim=1)
    return F.normalize(pooled, dim=-1) if normalize else pooled


def as_video(pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, F, 3, H, W) from (B, F, 3, H, W) or one frame per video (B, 3, H, W)."""
    if pixel_values.dim() == 4:
        return pixel_values.unsqueeze(1)
    if pixel_values.dim() != 5:
        raise ConfigError(f"pixel_values must be (B, F, 3, H, W), got shape {tuple(pixel_values.shape)}")
    return pixel_values


def frames_forward(backbone: Any, pixel_values: torch.Tensor, prompts: VideoPrompts | None) -> torch.Tensor:
    """Run the vision tower per frame (and across frames after K^s for VoP^F); (B, F, D) projected.

    The last layer computes only the CLS rows (every row still gives its key and value),
    unless ``prompts.full_rows``.
    """
    model = backbone.model
    vision = model.vision_model
    layers = vision.encoder.layers
    batch, frames = pixel_values.shape[:2]
    weight = model.visual_projection.weight
    pixels = pixel_values.reshape(batch * frames, *pixel_values.shape[2:]).to(weight.device, weight.dtype)
    x = vision.embeddings(pixels)
    k = len(layers) if prompts is None or prompts.k_shallow is None else prompts.k_shallow
    act = activation_of(model.config.vision_config)
    cls_only = k == len(layers) and (prompts is None or not prompts.full_rows)  # the last layer is intra-frame
    if prompts is not None and prompts.n_prompts and not prompts.full_rows:
        x = _intra_frame(vision, x, prompts, k, act, cls_only)
    else:
        x = _intra_frame_full(vision, x, prompts, k, act, cls_only)
    if k == len(layers):
        cls = x[:, 0].view(batch, frames, -1)
    else:
        cls = _inter_frame(x, prompts, layers[k:], act, batch, frames)
    return model.visual_projection(vision.post_layernorm(cls))


def _intra_frame_full(vision: Any, x: torch.Tensor, prompts: VideoPrompts | None, k: int, act: Callable,
                      cls_only: bool) -> torch.Tensor:
    """Layers 0..k-1 per frame with the prompt slots as ordinary rows; returns [CLS, patches] rows
    (``cls_only``: the last layer computes and returns the CLS row alone)."""
    layers = vision.encoder.layers
    n = 0 if prompts is None else prompts.n_prompts
    if n:  # layer-0 prompts go through pre_layrnorm with the patches: the authors' code inserts them before it
        x = torch.cat([x[:, :1], prompts.shallow(0, x).to(x.dtype), x[:, 1:]], dim=1)
    x = vision.pre_layrnorm(x)
    for i in range(k):
        if n and 0 < i < prompts.shallow_depth:
            x = torch.cat([x[:, :1], prompts.shallow(i, x).to(x.dtype), x[:, 1 + n :]], dim=1)
        x = run_block(layers[i], x, act, keep=slice(0, 1) if cls_only and i == k - 1 else None)
    return torch.cat([x[:, :1], x[:, 1 + n :]], dim=1) if n and not cls_only else x


def _intra_frame(vision: Any, x: torch.Tensor, prompts: VideoPrompts, k: int, act: Callable,
                 cls_only: bool) -> torch.Tensor:
    """Layers 0..k-1 per frame, fresh prompts as keys/values only; returns [CLS, patches] rows
    (``cls_only``: the last layer computes and returns the CLS row alone).

    The prompts become rows at the last fresh layer only when a later intra-frame layer
    keeps what it wrote into the slots (visual depth < K^s).
    """
    layers = vision.encoder.layers
    n, depth = prompts.n_prompts, prompts.shallow_depth
    embedded = x
    x = vision.pre_layrnorm(x)
    inserted = False
    for i in range(k):
        keep = slice(0, 1) if cls_only and i == k - 1 else None
        # VoP^C makes layer-0 prompts from the embeddings' CLS, before pre_layrnorm (as the full forward does)
        source = embedded if i == 0 else x
        if discarded_after(i, depth, k):
            if prompts.shallow_kv is not None:
                extra = prompts.shallow_kv(i)
            else:
                extra = layer_kv(layers[i], _fresh(vision, prompts, i, source))
            x = run_block(layers[i], x, act, extra=extra, at=1, keep=keep)
            continue
        if i < depth:
            x = torch.cat([x[:, :1], _fresh(vision, prompts, i, source), x[:, 1:]], dim=1)
            inserted = True
        x = run_block(layers[i], x, act, keep=keep)
    return torch.cat([x[:, :1], x[:, 1 + n :]], dim=1) if inserted and not cls_only else x


def _fresh(vision: Any, prompts: VideoPrompts, layer: int, hidden: torch.Tensor) -> torch.Tensor:
    """The fresh prompt tokens of intra-frame ``layer`` (layer 0's through pre_layrnorm, as in the full forward)."""
    content = prompts.shallow(layer, hidden).to(hidden.dtype)
    return vision.pre_layrnorm(content) if layer == 0 else content


def _inter_frame(x: torch.Tensor, prompts: VideoPrompts, layers: Any, act: Callable, batch: int,
                 frames: int) -> torch.Tensor:
    """VoP^F deep layers over [CLS_1..CLS_F, P (video prompts), patches_1..patches_F]; returns (B, F, D) CLS.

    The video prompts are fresh at every layer, so only their keys and values join (unless ``full_rows``).
    """
    width = x.shape[-1]
    x = x.view(batch, frames, -1, width) + prompts.frame_pos.to(x.dtype).unsqueeze(2)
    cls, patches = x[:, :, 0], x[:, :, 1:].reshape(batch, -1, width)
    video = prompts.video.to(x.dtype)
    if prompts.full_rows:
        for j, layer in enumerate(layers):
            seq = run_block(layer, torch.cat([cls, video[:, j], patches], dim=1), act)
            cls, patches = seq[:, :frames], seq[:, frames + video.shape[2] :]
        return cls
    seq = torch.cat([cls, patches], dim=1)
    for j, layer in enumerate(layers):
        if prompts.video_kv is not None:
            extra = (prompts.video_kv[0][:, j], prompts.video_kv[1][:, j])
        else:
            extra = layer_kv(layer, video[:, j])
        keep = slice(0, frames) if j == len(layers) - 1 else None  # the last layer: the CLS rows alone
        seq = run_block(layer, seq, act, extra=extra, at=frames, keep=keep)
    return seq[:, :frames]
