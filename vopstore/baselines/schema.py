"""What a valid stored baseline holds, checked without torch (the store's gate at add, push and import).

As for prompt sets (vopstore.prompts.schema), the store never loads a backbone, so the
backbone's sizes are read off the tensors and every tensor must agree with them:

* the method is a baseline and its config has only known keys and valid values;
* exactly the tensors the method trains on a CLIP with the layer counts the names show
  (the parameter names of transformers' ``CLIPModel``, or the adapters' stacked tensors);
* every shape consistent with one set of CLIP sizes (widths, MLP sizes, vocabulary,
  positions, patch size, projection dim; the adapters' hidden size from the config);
* float tensors only, the metadata ``dtype`` naming exactly their dtypes, every value finite.

Loading onto a real backbone checks the exact shapes again (registry.baseline_from_tensors).
"""

from __future__ import annotations

from typing import Any

from vopstore.baselines.configs import AdapterConfig, baseline_config
from vopstore.baselines.selection import TOWERS, layer_count, select
from vopstore.errors import ConfigError, InvalidCheckpointError
from vopstore.prompts.schema import FLOAT_DTYPES, tensor_is_finite

_BLOCK = {  # one transformer block, width "d" and MLP size "i" of its tower
    **{f"self_attn.{p}_proj.weight": ("d", "d") for p in ("q", "k", "v", "out")},
    **{f"self_attn.{p}_proj.bias": ("d",) for p in ("q", "k", "v", "out")},
    "layer_norm1.weight": ("d",), "layer_norm1.bias": ("d",), "mlp.fc1.weight": ("i", "d"), "mlp.fc1.bias": ("i",),
    "mlp.fc2.weight": ("d", "i"), "mlp.fc2.bias": ("d",), "layer_norm2.weight": ("d",), "layer_norm2.bias": ("d",),
}
_TOWER_OWN = {
    "text": {"embeddings.token_embedding.weight": ("vocab", "d"), "embeddings.position_embedding.weight": ("pos", "d"),
             "final_layer_norm.weight": ("d",), "final_layer_norm.bias": ("d",)},
    "vision": {"embeddings.class_embedding": ("d",), "embeddings.patch_embedding.weight": ("d", 3, "patch", "patch"),
               "embeddings.position_embedding.weight": ("pos", "d"), "pre_layrnorm.weight": ("d",),
               "pre_layrnorm.bias": ("d",), "post_layernorm.weight": ("d",), "post_layernorm.bias": ("d",)},
}


def clip_symbols(text_layers: int, vision_layers: int) -> dict[str, tuple]:
    """Every ``CLIPModel`` parameter name with its shape in symbols ("text.d", "vision.i", "proj", ...)."""
    out: dict[str, tuple] = {"logit_scale": ()}
    for tower, layers in (("text", text_layers), ("vision", vision_layers)):
        prefix = TOWERS[tower]

        def scoped(shape: tuple, tower: str = tower) -> tuple:
            return tuple(s if isinstance(s, int) else f"{tower}.{s}" for s in shape)

        out.update({f"{prefix}.{n}": scoped(s) for n, s in _TOWER_OWN[tower].items()})
        for i in range(layers):
            out.update({f"{prefix}.encoder.layers.{i}.{n}": scoped(s) for n, s in _BLOCK.items()})
    out.update({"text_projection.weight": ("proj", "text.d"), "visual_projection.weight": ("proj", "vision.d")})
    return out


def adapter_symbols(hidden: int) -> dict[str, tuple]:
    """The adapters' stacked tensors per tower (layers, then the bottleneck ``hidden`` and the width)."""
    out: dict[str, tuple] = {}
    for tower in TOWERS:
        layers, width = f"{tower}.layers", f"{tower}.d"
        out.update({f"{tower}.down.weight": (layers, hidden, width), f"{tower}.down.bias": (layers, hidden),
                    f"{tower}.up.weight": (layers, width, hidden), f"{tower}.up.bias": (layers, width)})
    return out


def expected_symbols(method: str, config: Any, names: list[str]) -> dict[str, tuple]:
    """The tensors ``method`` stores on a CLIP with the layer counts ``names`` show, with symbolic shapes."""
    if isinstance(config, AdapterConfig):
        return adapter_symbols(config.hidden)
    clip = clip_symbols(layer_count(names, "text"), layer_count(names, "vision"))
    return {name: clip[name] for name in select(method, clip)}


def check_baseline(meta: Any, entries: dict, body: bytes | memoryview, source: str = "baseline") -> None:
    """Check a parsed checkpoint of a baseline; raise a one-line InvalidCheckpointError on the first problem.

    Args:
        meta: the file's :class:`~vopstore.checkpoint.PromptSetMeta` (``meta.method`` is a baseline).
        entries: the safetensors header without ``__metadata__``: {name: {dtype, shape, data_offsets}}.
        body: the bytes after the header (the tensors' data).
    """
    try:
        config = baseline_config(meta.method, meta.config)
    except (ConfigError, TypeError, ValueError) as exc:
        raise InvalidCheckpointError(f"{source}: invalid {meta.method} config: {' '.join(str(exc).split())}") from None
    found = {name: tuple(entry["shape"]) for name, entry in entries.items()}
    expected = expected_symbols(meta.method, config, list(found))
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        parts = [f"missing {missing[:4]}"] * bool(missing) + [f"unexpected {extra[:4]}"] * bool(extra)
        raise InvalidCheckpointError(f"{source}: tensors do not match baseline {meta.method}: {', '.join(parts)}")
    problem = _unify(found, expected)
    if problem:
        raise InvalidCheckpointError(f"{source}: {problem} for baseline {meta.method}")
    _check_floats(meta, entries, body, source)


def _unify(found: dict[str, tuple], expected: dict[str, tuple]) -> str | None:
    """Bind every size symbol to one value across all tensors; the first disagreement, or None."""
    bound: dict[str, int] = {}
    for name in sorted(expected):
        shape, symbols = found[name], expected[name]
        if len(shape) != len(symbols):
            return f"tensor {name!r} has shape {shape}, expected {len(symbols)} dimensions"
        for size, symbol in zip(shape, symbols):
            want = symbol if isinstance(symbol, int) else bound.setdefault(symbol, size)
            if size != want or size < 1:
                return f"tensor {name!r} has shape {shape}, which disagrees with the other tensors ({symbol} = {want})"
    return None


def _check_floats(meta: Any, entries: dict, body: bytes | memoryview, source: str) -> None:
    """Float tensors only, named exactly by the metadata ``dtype``, holding no NaN or infinity."""
    dtypes = {name: entry["dtype"] for name, entry in entries.items()}
    not_float = sorted(name for name, dtype in dtypes.items() if dtype not in FLOAT_DTYPES)
    if not_float:
        raise InvalidCheckpointError(f"{source}: tensor {not_float[0]!r} is {dtypes[not_float[0]]}; baselines "
                                     f"hold float tensors only ({', '.join(FLOAT_DTYPES)})")
    named = ",".join(sorted({FLOAT_DTYPES[d][0] for d in dtypes.values()}))
    if meta.dtype != named:
        raise InvalidCheckpointError(f"{source}: metadata says dtype {meta.dtype!r}, the tensors are {named!r}")
    for name in sorted(entries):
        if not tensor_is_finite(body, entries[name]):
            raise InvalidCheckpointError(f"{source}: tensor {name!r} holds NaN or infinite values")
