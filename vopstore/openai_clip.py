"""OpenAI's CLIP state-dict layout, converted to a transformers ``CLIPModel`` folder.

The authors of VoP trained on OpenAI's ``clip`` package, whose checkpoints name the
layers ``visual.conv1``, ``transformer.resblocks.N.attn.in_proj_weight`` and so on.
vopstore serves transformers' ``CLIPModel``, so an imported backbone is converted
once, saved with ``save_pretrained`` and from then on loaded and fingerprinted like
any other backbone folder. Only the ViT image tower is supported (OpenAI's ResNet
towers have no transformers counterpart).

The architecture is read from the tensor shapes as OpenAI's ``build_model`` does,
including its rule of one attention head per 64 channels.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from vopstore.backbone import CLIP_MEAN, CLIP_STD
from vopstore.errors import InvalidCheckpointError
from vopstore.tokenizer import save_clip_tokenizer

HEAD_WIDTH = 64  # OpenAI's build_model: heads = width // 64, in both towers
VOCAB_SIZE = 49408  # the CLIP BPE vocabulary that vopstore's tokenizer produces
# Scalars that OpenAI's TorchScript archives carry beside the weights (build_model deletes them too).
_NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size")
_BLOCK = re.compile(r"(visual\.)?transformer\.resblocks\.(\d+)\.(.+)")
# Within one residual block: OpenAI name -> transformers name (in_proj_* is split into q, k, v separately).
_BLOCK_NAMES = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
# What the architecture is read from, besides the tensors outside the blocks.
_FIRST_BLOCKS = ("transformer.resblocks.0.mlp.c_fc.weight", "visual.transformer.resblocks.0.mlp.c_fc.weight")
# Everything outside the blocks: OpenAI name -> (transformers name, transposed?).
_TOP_NAMES = {
    "token_embedding.weight": ("text_model.embeddings.token_embedding.weight", False),
    "positional_embedding": ("text_model.embeddings.position_embedding.weight", False),
    "ln_final.weight": ("text_model.final_layer_norm.weight", False),
    "ln_final.bias": ("text_model.final_layer_norm.bias", False),
    "text_projection": ("text_projection.weight", True),  # OpenAI multiplies x @ P; a Linear computes x @ W.T
    "visual.conv1.weight": ("vision_model.embeddings.patch_embedding.weight", False),
    "visual.class_embedding": ("vision_model.embeddings.class_embedding", False),
    "visual.positional_embedding": ("vision_model.embeddings.position_embedding.weight", False),
    "visual.ln_pre.weight": ("vision_model.pre_layrnorm.weight", False),
    "visual.ln_pre.bias": ("vision_model.pre_layrnorm.bias", False),
    "visual.ln_post.weight": ("vision_model.post_layernorm.weight", False),
    "visual.ln_post.bias": ("vision_model.post_layernorm.bias", False),
    "visual.proj": ("visual_projection.weight", True),
    "logit_scale": ("logit_scale", False),
}


def clip_weights(state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The OpenAI CLIP weights of ``state`` (scalars of TorchScript archives dropped), checked for completeness."""
    weights = {k: v for k, v in state.items() if k not in _NOT_WEIGHTS}
    if any(k.startswith("visual.layer1.") for k in weights):
        raise InvalidCheckpointError(f"{source}: a CLIP with a ResNet image tower; only ViT CLIPs can be imported")
    missing = sorted((set(_TOP_NAMES) | set(_FIRST_BLOCKS)) - set(weights))
    if missing:
        raise InvalidCheckpointError(f"{source}: not an OpenAI ViT CLIP state dict: missing {', '.join(missing[:5])}"
                                     f"{' ...' if len(missing) > 5 else ''}")
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise InvalidCheckpointError(f"{source}: '{name}' is a {type(tensor).__name__}, not a tensor")
    return weights


def clip_config(weights: dict[str, torch.Tensor], source: str = "checkpoint") -> Any:
    """The ``transformers.CLIPConfig`` of an OpenAI ViT CLIP, read from its tensor shapes."""
    from transformers import CLIPConfig

    text_width, vision_width = weights["ln_final.weight"].shape[0], weights["visual.conv1.weight"].shape[0]
    vocab, patch = weights["token_embedding.weight"].shape[0], weights["visual.conv1.weight"].shape[-1]
    grid = round((weights["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    if vocab != VOCAB_SIZE:
        raise InvalidCheckpointError(f"{source}: a text vocabulary of {vocab} tokens; vopstore's CLIP tokenizer has "
                                     f"{VOCAB_SIZE}")
    for tower, width in (("text", text_width), ("image", vision_width)):
        if width % HEAD_WIDTH:
            raise InvalidCheckpointError(f"{source}: {tower} width {width} is not a multiple of {HEAD_WIDTH} "
                                         "(OpenAI CLIPs use one attention head per 64 channels)")
    shared = {"hidden_act": "quick_gelu", "projection_dim": weights["text_projection"].shape[1]}
    text = {**shared, "vocab_size": vocab, "hidden_size": text_width, "num_hidden_layers": _depth(weights, ""),
            "intermediate_size": weights["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "num_attention_heads": text_width // HEAD_WIDTH,
            "max_position_embeddings": weights["positional_embedding"].shape[0],
            "bos_token_id": VOCAB_SIZE - 2, "eos_token_id": VOCAB_SIZE - 1, "pad_token_id": VOCAB_SIZE - 1}
    vision = {**shared, "hidden_size": vision_width, "num_hidden_layers": _depth(weights, "visual."),
              "intermediate_size": weights["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
              "num_attention_heads": vision_width // HEAD_WIDTH, "patch_size": patch, "image_size": patch * grid}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=shared["projection_dim"])


def _depth(weights: dict, tower: str) -> int:
    """How many residual blocks a tower has (``clip_weights`` made sure block 0 is there)."""
    return 1 + max(int(m.group(2)) for k in weights if (m := _BLOCK.fullmatch(k)) and (m.group(1) or "") == tower)


def to_transformers(weights: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename (and split or transpose) OpenAI CLIP weights into ``CLIPModel``'s state-dict layout."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        block = _BLOCK.fullmatch(name)
        if block is not None:
            tower = "vision_model" if block.group(1) else "text_model"
            out.update(_block_weights(f"{tower}.encoder.layers.{block.group(2)}", block.group(3), tensor, name, source))
        elif name in _TOP_NAMES:
            target, transposed = _TOP_NAMES[name]
            out[target] = tensor.t() if transposed else tensor
        else:
            raise InvalidCheckpointError(f"{source}: '{name}' is no part of an OpenAI ViT CLIP")
    return {name: tensor.contiguous() for name, tensor in out.items()}


def _block_weights(prefix: str, name: str, tensor: torch.Tensor, full_name: str,
                   source: str) -> dict[str, torch.Tensor]:
    """One tensor of a residual block under its transformers name(s)."""
    if name in ("attn.in_proj_weight", "attn.in_proj_bias"):  # rows stacked as [q; k; v]
        kind = name.rsplit("_", 1)[1]
        return {f"{prefix}.self_attn.{p}_proj.{kind}": part for p, part in zip("qkv", tensor.chunk(3, dim=0))}
    module, _, kind = name.rpartition(".")
    if module not in _BLOCK_NAMES:
        raise InvalidCheckpointError(f"{source}: '{full_name}' is no part of a CLIP residual block")
    return {f"{prefix}.{_BLOCK_NAMES[module]}.{kind}": tensor}


def save_as_transformers(weights: dict[str, torch.Tensor], folder: str | Path, source: str = "checkpoint") -> Path:
    """Write OpenAI CLIP ``weights`` to ``folder`` as a ``CLIPModel`` that ``load_backbone`` can load.

    The folder gets ``config.json`` + ``model.safetensors`` (``save_pretrained``), the CLIP
    tokenizer and a preprocessor config with OpenAI's image normalisation.

    Raises:
        InvalidCheckpointError: a tensor is missing, extra, or has the wrong shape.
    """
    from transformers import CLIPModel

    weights = clip_weights(weights, source)
    config = clip_config(weights, source)
    with torch.device("meta"):
        model = CLIPModel(config)
    mapped = to_transformers(weights, source)
    _check_shapes(model.state_dict(), mapped, source)
    model.load_state_dict(mapped, strict=False, assign=True)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    save_clip_tokenizer(folder)
    _write_preprocessor(folder, config.vision_config.image_size)
    return folder


def _check_shapes(expected: dict[str, torch.Tensor], mapped: dict[str, torch.Tensor], source: str) -> None:
    missing = sorted(k for k in set(expected) - set(mapped) if not k.endswith("position_ids"))  # buffers
    extra = sorted(set(mapped) - set(expected))
    if missing or extra:
        raise InvalidCheckpointError(f"{source}: the CLIP weights do not make a complete model "
                                     f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for name, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise InvalidCheckpointError(f"{source}: {name} has shape {tuple(tensor.shape)}, the architecture read "
                                         f"from the other tensors needs {tuple(expected[name].shape)}")


def _write_preprocessor(folder: Path, size: int) -> None:
    """OpenAI's preprocessing: bicubic resize of the short side to ``size``, centre crop, CLIP mean and std."""
    config = {"crop_size": {"height": size, "width": size}, "size": {"shortest_edge": size},
              "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "do_center_crop": True,
              "do_resize": True, "do_normalize": True, "resample": 3, "image_processor_type": "CLIPImageProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2))
