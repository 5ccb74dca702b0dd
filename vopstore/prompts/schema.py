"""What a valid prompt set of each method holds, checked without torch (the store's gate at add, push, import).

A method's tensors follow from its config and four backbone sizes (text/vision layers
and widths). The store never loads a backbone, and a prompt set for a backbone it has
never seen is allowed (its fingerprint travels with it), so the sizes are read off the
tensors themselves and every tensor must then agree with them and with the config:

* the method is known, the config has only known keys and valid values;
* exactly the method's tensor names, each with the shape the config and those sizes give;
* float tensors only (F16, BF16, F32, F64), and the metadata ``dtype`` names exactly their dtypes;
* every value finite (no NaN, no inf): checked on the raw bits with numpy.

:func:`tensor_shapes` mirrors the modules' ``_build_visual``; a test compares the two for
every method over many configs. Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vopstore.baselines.configs import is_baseline  # torch-free
from vopstore.errors import ConfigError, InvalidCheckpointError, UnknownMethodError
from vopstore.prompts.configs import METHOD_CONFIGS, Dims, MethodConfig, depth_of

_FUNCTION_SPECIFIC = frozenset({"vop-f", "vop-f+p", "vop-f+c"})
_FINITE_CHUNK = 4 << 20  # bytes of a tensor checked for NaN/inf at once
_VISUAL = ("visual", "shared", "generic", "video", "frame_pos")  # tensors whose last dim is the vision width

# safetensors dtype -> (torch's name, as the metadata writes it; the unsigned view used to read its bits;
# the exponent mask: all exponent bits set means inf or NaN)
FLOAT_DTYPES = {
    "F16": ("float16", "<u2", 0x7C00),
    "BF16": ("bfloat16", "<u2", 0x7F80),
    "F32": ("float32", "<u4", 0x7F800000),
    "F64": ("float64", "<u8", 0x7FF0000000000000),
}


def config_for(method: str, config: dict, source: str = "prompt set") -> MethodConfig:
    """The method's config object from a checkpoint's config dict, refusing unknown keys and bad values."""
    cls = METHOD_CONFIGS.get(method)
    if cls is None:
        raise UnknownMethodError(f"{source}: unknown prompt method {method!r}; choose one of "
                                 f"{', '.join(METHOD_CONFIGS)}")
    try:
        return cls.from_dict(config, strict=True)
    except (ConfigError, TypeError, ValueError) as exc:
        raise InvalidCheckpointError(f"{source}: invalid {method} config: {_one_line(exc)}") from None


def tensor_shapes(method: str, config: MethodConfig, dims: Dims) -> dict[str, tuple[int, ...]]:
    """Every tensor of ``method`` with ``config`` on a backbone of ``dims``: {name: shape}."""
    cfg, width = config, dims.vision_width
    shapes = {"text": (depth_of(cfg.text_depth, dims.text_layers), cfg.text_prompts, dims.text_width)}
    function_specific = method in _FUNCTION_SPECIFIC
    depth = depth_of(cfg.visual_depth, cfg.k_shallow if function_specific else dims.vision_layers)
    kind = method.removeprefix("vop-f+") if function_specific else method.removeprefix("vop-")
    if kind in ("vop", "vop-f"):
        shapes["visual"] = (depth, cfg.visual_prompts, width)
    elif kind == "p":
        shapes["shared"] = (depth, cfg.shared_prompts, width)
        shapes["table"] = (depth, cfg.num_frames, cfg.position_prompts, width)
    elif kind == "c":
        hidden = cfg.cmm_hidden or width
        shapes["generic"] = (depth, cfg.generic_prompts, width)
        for suffix in ("", "_reverse"):
            shapes[f"cmm.weight_ih_l0{suffix}"] = (4 * hidden, width)
            shapes[f"cmm.weight_hh_l0{suffix}"] = (4 * hidden, hidden)
            shapes[f"cmm.bias_ih_l0{suffix}"] = (4 * hidden,)
            shapes[f"cmm.bias_hh_l0{suffix}"] = (4 * hidden,)
        shapes["fc.weight"] = (cfg.generated_prompts * width, 2 * hidden)
        shapes["fc.bias"] = (cfg.generated_prompts * width,)
    else:  # pragma: no cover - METHOD_CONFIGS and this function change together
        raise UnknownMethodError(f"no tensor schema for method {method!r}")
    if function_specific:
        shapes["video"] = (dims.vision_layers - cfg.k_shallow, cfg.video_prompts, width)
        shapes["frame_pos"] = (cfg.num_frames, width)
    return shapes


def infer_dims(method: str, config: MethodConfig, found: dict[str, tuple[int, ...]]) -> Dims:
    """The backbone sizes the tensors imply (layers only as far as the config lets them show)."""
    text = found["text"]
    text_layers = text[0] if config.text_depth is None else config.text_depth
    width = next(found[name][-1] for name in _VISUAL if name in found)
    if method in _FUNCTION_SPECIFIC:
        vision_layers = config.k_shallow + found["video"][0]
    else:
        first = next(found[name] for name in _VISUAL if name in found)
        vision_layers = first[0] if config.visual_depth is None else config.visual_depth
    return Dims(text_layers=text_layers, text_width=text[2], vision_layers=vision_layers, vision_width=width)


def check_prompt_set(meta: Any, entries: dict, body: bytes | memoryview, source: str = "prompt set") -> None:
    """Check a parsed checkpoint against its method's schema; raise a one-line error on the first problem.

    Args:
        meta: the file's :class:`~vopstore.checkpoint.PromptSetMeta`.
        entries: the safetensors header without ``__metadata__``: {name: {dtype, shape, data_offsets}}.
        body: the bytes after the header (the tensors' data).

    Raises:
        UnknownMethodError: the method is not one of vopstore's.
        InvalidCheckpointError: anything else that does not fit the method.
    """
    if is_baseline(meta.method):  # a stored baseline (full, bias, ...) has its own schema
        from vopstore.baselines.schema import check_baseline  # it imports FLOAT_DTYPES from here: a cycle

        return check_baseline(meta, entries, body, source)
    config = config_for(meta.method, meta.config, source)
    found = {name: tuple(entry["shape"]) for name, entry in entries.items()}
    dtypes = {name: entry["dtype"] for name, entry in entries.items()}
    not_float = sorted(name for name, dtype in dtypes.items() if dtype not in FLOAT_DTYPES)
    if not_float:
        name = not_float[0]
        raise InvalidCheckpointError(f"{source}: tensor {name!r} is {dtypes[name]}; prompt sets hold float tensors "
                                     f"only ({', '.join(FLOAT_DTYPES)})")
    named = ",".join(sorted({FLOAT_DTYPES[d][0] for d in dtypes.values()}))
    if meta.dtype != named:
        raise InvalidCheckpointError(f"{source}: metadata says dtype {meta.dtype!r}, the tensors are {named!r}")
    template = tensor_shapes(meta.method, config, Dims(1, 1, 2, 1))  # names and ranks do not depend on sizes
    missing, extra = sorted(set(template) - set(found)), sorted(set(found) - set(template))
    if missing or extra:
        parts = [f"missing {missing}"] * bool(missing) + [f"unexpected {extra}"] * bool(extra)
        raise InvalidCheckpointError(f"{source}: tensors do not match method {meta.method}: {', '.join(parts)} "
                                     f"(expected {sorted(template)})")
    for name, shape in template.items():
        if len(found[name]) != len(shape):
            raise InvalidCheckpointError(f"{source}: tensor {name!r} has shape {found[name]}, expected "
                                         f"{len(shape)} dimensions for {meta.method}")
    dims = infer_dims(meta.method, config, found)
    for field in dataclasses.fields(dims):
        if getattr(dims, field.name) < 1:
            raise InvalidCheckpointError(f"{source}: the tensors imply a backbone with {field.name} = "
                                         f"{getattr(dims, field.name)}; every size must be at least 1")
    try:
        config.validate_for(dims)
    except ConfigError as exc:
        raise InvalidCheckpointError(f"{source}: {meta.method} config does not fit its tensors: "
                                     f"{_one_line(exc)}") from None
    expected = tensor_shapes(meta.method, config, dims)
    for name in sorted(expected):
        if found[name] != expected[name]:
            raise InvalidCheckpointError(
                f"{source}: tensor {name!r} has shape {found[name]}, but {meta.method} with this config on a "
                f"backbone of text {dims.text_layers}x{dims.text_width}, vision {dims.vision_layers}x"
                f"{dims.vision_width} needs {expected[name]}")
    for name in sorted(entries):
        if not tensor_is_finite(body, entries[name]):
            raise InvalidCheckpointError(f"{source}: tensor {name!r} holds NaN or infinite values")


def tensor_is_finite(body: bytes | memoryview, entry: dict) -> bool:
    """No value of the tensor ``entry`` (a safetensors header entry) in ``body`` is NaN or infinite.

    Checked on the raw bits (every exponent bit set), a few MiB at a time.
    """
    import numpy as np  # only this scan needs it: reading a header (the store, the CLI) stays light

    _, view, mask = FLOAT_DTYPES[entry["dtype"]]
    begin, end = entry["data_offsets"]
    if end == begin:
        return True
    bits = np.frombuffer(body, dtype=view, count=(end - begin) // np.dtype(view).itemsize, offset=begin)
    mask_value = np.array(mask, dtype=view)
    # A slice at a time: the temporaries stay a few MiB however big the tensor (a full fine-tune's are 100 MB).
    step = _FINITE_CHUNK // bits.itemsize
    return not any(np.any((bits[i: i + step] & mask_value) == mask_value) for i in range(0, bits.size, step))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
