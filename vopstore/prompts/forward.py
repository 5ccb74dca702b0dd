"""The prompted CLIP forward, written from the layers' own submodules.

transformers' encoder forward changed its signature between v4 and v5, so the
blocks are run here from ``layer_norm1``, ``self_attn.{q,k,v,out}_proj``,
``layer_norm2``, ``mlp.fc1/fc2`` and the config's activation, with torch's
``scaled_dot_product_attention``. With no prompts the result equals
``CLIPModel.get_text_features`` / ``get_image_features``.

Every function takes **per-row** prompts (see the bank contract in
:mod:`vopstore.prompts`), so one forward can serve rows of different prompt sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from vopstore.errors import ConfigError

# (layer index, hidden states (B*F, T, D)) -> prompts (B*F, n, D) for an intra-frame layer
ShallowFn = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class TextPrompts:
    """Per-row text prompts: ``prompts`` (B, depth, P, D); ``layout`` 'prefix' or 'released'."""

    prompts: torch.Tensor
    layout: str = "prefix"


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
    """

    n_prompts: int
    shallow: ShallowFn | None
    shallow_depth: int
    k_shallow: int | None = None
    video: torch.Tensor | None = None
    frame_pos: torch.Tensor | None = None


# --- one transformer block ---------------------------------------------------------------------------------------


def run_block(layer: Any, hidden: torch.Tensor, activation: Callable, causal: bool = False) -> torch.Tensor:
    """One pre-LN CLIP block from its submodules: attention then MLP, both residual."""
    attn = layer.self_attn
    x = layer.layer_norm1(hidden)
    batch, length, width = x.shape
    heads = attn.num_heads

    def split(proj: Any) -> torch.Tensor:
        return proj(x).view(batch, length, heads, width // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(attn.q_proj), split(attn.k_proj), split(attn.v_proj),
                                         is_causal=causal, scale=attn.scale)
    hidden = hidden + attn.out_proj(out.transpose(1, 2).reshape(batch, length, width))
    x = layer.layer_norm2(hidden)
    return hidden + layer.mlp.fc2(activation(layer.mlp.fc1(x)))


def _activation(config: Any) -> Callable:
    from transformers.activations import ACT2FN

    return ACT2FN[config.hidden_act]


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
    """Run the text tower with deep prompts; pool at the (shifted) first EOT token; project."""
    model = backbone.model
    text = model.text_model
    ids = input_ids.to(model.text_projection.weight.device)
    n = 0 if prompts is None else prompts.prompts.shape[2]
    if prompts is not None and prompts.layout == "released":
        ids = _released_ids(ids, backbone.eot_token_id, backbone.context_length - n)
    if ids.shape[1] + n > backbone.context_length:
        raise ConfigError(f"{ids.shape[1]} token ids + {n} prompts exceed CLIP's {backbone.context_length} "
                          f"positions; tokenize with backbone.tokenize(texts, n_prompts={n})")
    eot = (ids == backbone.eot_token_id).int().argmax(-1)
    x = text.embeddings.token_embedding(ids)
    layout = "prefix" if prompts is None else prompts.layout
    if n:
        x = _put_text_prompts(x, prompts.prompts[:, 0].to(x.dtype), layout, inserting=True)
    x = x + text.embeddings.position_embedding.weight[: x.shape[1]]
    act = _activation(model.config.text_config)
    depth = 0 if prompts is None else prompts.prompts.shape[1]
    for i, layer in enumerate(text.encoder.layers):
        if n and 0 < i < depth:
            x = _put_text_prompts(x, prompts.prompts[:, i].to(x.dtype), layout, inserting=False)
        x = run_block(layer, x, act, causal=True)
    x = text.final_layer_norm(x)
    pooled = x[torch.arange(x.shape[0], device=x.device), eot + n]
    return model.text_projection(pooled)


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
    pixel_values = _as_video(pixel_values)
    prompts = method_cls.video_prompts(config, tensors, set_index, pixel_values.shape[1])
    return pool_frames(frames_forward(backbone, pixel_values, prompts), normalize)


def encode_frames(backbone: Any, pixel_values: torch.Tensor, method: Any = None) -> torch.Tensor:
    """Projected per-frame embeddings (B, F, D), NOT normalised (F = 1 equals get_image_features)."""
    pixel_values = _as_video(pixel_values)
    if method is None:
        return frames_forward(backbone, pixel_values, None)
    index = torch.zeros(pixel_values.shape[0], dtype=torch.long, device=pixel_values.device)
    prompts = type(method).video_prompts(method.config, method.prompt_tensors(), index, pixel_values.shape[1])
    return frames_forward(backbone, pixel_values, prompts)


def pool_frames(frames: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Mean of the L2-normalised frame embeddings (paper §3.1), optionally re-normalised."""
    pooled = F.normalize(frames, dim=-1).mean(dim=1)
    return F.normalize(pooled, dim=-1) if normalize else pooled


def _as_video(pixel_values: torch.Tensor) -> torch.Tensor:
    if pixel_values.dim() == 4:
        return pixel_values.unsqueeze(1)
    if pixel_values.dim() != 5:
        raise ConfigError(f"pixel_values must be (B, F, 3, H, W), got shape {tuple(pixel_values.shape)}")
    return pixel_values


def frames_forward(backbone: Any, pixel_values: torch.Tensor, prompts: VideoPrompts | None) -> torch.Tensor:
    """Run the vision tower per frame (and across frames after K^s for VoP^F); (B, F, D) projected."""
    model = backbone.model
    vision = model.vision_model
    layers = vision.encoder.layers
    batch, frames = pixel_values.shape[:2]
    weight = model.visual_projection.weight
    pixels = pixel_values.reshape(batch * frames, *pixel_values.shape[2:]).to(weight.device, weight.dtype)
    x = vision.embeddings(pixels)
    n = 0 if prompts is None else prompts.n_prompts
    k = len(layers) if prompts is None or prompts.k_shallow is None else prompts.k_shallow
    act = _activation(model.config.vision_config)
    if n:  # layer-0 prompts go through pre_layrnorm, as in the authors' code (spec §1.2)
        x = torch.cat([x[:, :1], prompts.shallow(0, x).to(x.dtype), x[:, 1:]], dim=1)
    x = vision.pre_layrnorm(x)
    for i in range(k):
        if n and 0 < i < prompts.shallow_depth:
            x = torch.cat([x[:, :1], prompts.shallow(i, x).to(x.dtype), x[:, 1 + n :]], dim=1)
        x = run_block(layers[i], x, act)
    if k == len(layers):
        cls = x[:, 0].view(batch, frames, -1)
    else:
        cls = _inter_frame(torch.cat([x[:, :1], x[:, 1 + n :]], dim=1), prompts, layers[k:], act, batch, frames)
    return model.visual_projection(vision.post_layernorm(cls))


def _inter_frame(x: torch.Tensor, prompts: VideoPrompts, layers: Any, act: Callable, batch: int,
                 frames: int) -> torch.Tensor:
    """VoP^F deep layers over [CLS_1..CLS_F, P (video prompts), patches_1..patches_F]; returns (B, F, D) CLS."""
    width = x.shape[-1]
    x = x.view(batch, frames, -1, width) + prompts.frame_pos.to(x.dtype).unsqueeze(2)
    cls, patches = x[:, :, 0], x[:, :, 1:].reshape(batch, -1, width)
    n_video = prompts.video.shape[2]
    for j, layer in enumerate(layers):
        seq = run_block(layer, torch.cat([cls, prompts.video[:, j].to(x.dtype), patches], dim=1), act)
        cls, patches = seq[:, :frames], seq[:, frames + n_video :]
    return cls
