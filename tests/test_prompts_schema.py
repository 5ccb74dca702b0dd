"""The torch-free schema the store checks prompt sets against: it matches the real modules, and refuses bad content."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save

from tests.fixtures.stores import FINGERPRINT, checkpoint_bytes
from vopstore.checkpoint import PromptSetMeta, parse_checkpoint_bytes
from vopstore.errors import InvalidCheckpointError, UnknownMethodError
from vopstore.prompts.configs import Dims
from vopstore.prompts.schema import METHOD_CONFIGS, tensor_shapes

TINY = Dims(text_layers=3, text_width=8, vision_layers=4, vision_width=12)
CONFIGS = {
    "vop": [{}, {"text_prompts": 2, "visual_prompts": 3, "text_depth": 2, "visual_depth": 1}],
    "vop-p": [{}, {"shared_prompts": 1, "position_prompts": 2, "num_frames": 3, "visual_depth": 2}],
    "vop-c": [{}, {"generic_prompts": 1, "generated_prompts": 3, "cmm_hidden": 5, "visual_depth": 3}],
    "vop-f": [{"k_shallow": 2}, {"k_shallow": 3, "video_prompts": 1, "num_frames": 2, "visual_depth": 1}],
    "vop-f+p": [{"k_shallow": 1}, {"k_shallow": 3, "num_frames": 5, "shared_prompts": 2, "position_prompts": 1}],
    "vop-f+c": [{"k_shallow": 2}, {"k_shallow": 1, "cmm_hidden": 3, "generated_prompts": 1, "video_prompts": 2}],
}


def test_every_method_has_a_schema():
    from vopstore.prompts.registry import METHODS

    assert {name: cls.config_class for name, cls in METHODS.items()} == METHOD_CONFIGS


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_schema_shapes_are_the_modules_shapes(method):
    from vopstore.prompts.registry import build_meta

    for config in CONFIGS[method]:
        module = build_meta(method, TINY, **config)
        real = {name: tuple(p.shape) for name, p in module.named_parameters()}
        assert tensor_shapes(method, module.config, TINY) == real


def _file(method: str, config: dict, dims: Dims = TINY, seed: int = 0, dtype=np.float32, edit=None,
          meta_edit=None) -> bytes:
    """A prompt set of ``method`` built from the schema (numpy only), optionally edited before writing."""
    cfg = METHOD_CONFIGS[method].from_dict(config)
    rng = np.random.default_rng(seed)
    tensors = {name: rng.standard_normal(shape).astype(dtype) for name, shape in tensor_shapes(method, cfg, dims).items()}
    if edit:
        edit(tensors)
    names = {np.dtype(np.float16): "float16", np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}
    fields = dict(method=method, config=cfg.to_dict(), backbone_name="tiny", backbone_fingerprint=FINGERPRINT,
                  dtype=",".join(sorted({names.get(t.dtype, str(t.dtype)) for t in tensors.values()})),
                  params=sum(t.size for t in tensors.values()))
    fields.update(meta_edit or {})
    return save(tensors, metadata={"vopstore": PromptSetMeta(**fields).to_json()})


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_valid_sets_of_every_method_pass_on_any_backbone(method):
    for config in CONFIGS[method]:
        for dims in (TINY, Dims(2, 6, 5, 10)):  # a backbone the store has never seen is fine
            parse_checkpoint_bytes(_file(method, config, dims), contents=True)


def test_a_real_saved_prompt_set_passes(tmp_path, tiny_backbone):
    from vopstore.prompts import build_method

    for method, configs in CONFIGS.items():
        path = tmp_path / f"{method}.safetensors"
        build_method(method, tiny_backbone, **configs[0]).save(path, tiny_backbone)
        parse_checkpoint_bytes(path.read_bytes(), contents=True)


def _set(name, value):
    return lambda tensors: tensors.__setitem__(name, value)


BAD = {
    "unknown tensor name": ("vop", {}, dict(edit=_set("extra", np.zeros(3, np.float32))), "unexpected"),
    "missing tensor": ("vop", {}, dict(edit=lambda t: t.pop("visual")), "missing"),
    "renamed tensor": ("vop", {}, dict(edit=lambda t: t.__setitem__("visuals", t.pop("visual"))), "missing"),
    "wrong rank": ("vop", {}, dict(edit=_set("visual", np.zeros((4, 96), np.float32))), "dimensions"),
    "prompts disagree with config": ("vop", {"visual_prompts": 3},
                                     dict(edit=_set("visual", np.zeros((4, 8, 12), np.float32))), "needs (4, 3, 12)"),
    "widths disagree": ("vop-p", {}, dict(edit=_set("table", np.zeros((4, 12, 4, 11), np.float32))), "'table'"),
    "depth disagrees with config": ("vop", {"text_depth": 2}, dict(edit=_set("text", np.zeros((3, 8, 8), np.float32))),
                                    "'text'"),
    "lstm hidden disagrees": ("vop-c", {"cmm_hidden": 5},
                              dict(edit=_set("cmm.weight_hh_l0", np.zeros((20, 6), np.float32))), "cmm.weight_hh_l0"),
    "no inter-frame layers": ("vop-f", {"k_shallow": 2}, dict(edit=_set("video", np.zeros((0, 8, 12), np.float32))),
                              "k_shallow"),
    "int8 tensor": ("vop", {}, dict(edit=_set("visual", np.zeros((4, 8, 12), np.int8))), "float tensors only"),
    "metadata dtype disagrees": ("vop", {}, dict(meta_edit={"dtype": "float16"}), "metadata says dtype"),
    "mixed dtypes named as one": ("vop", {}, dict(edit=_set("visual", np.zeros((4, 8, 12), np.float16)),
                                                  meta_edit={"dtype": "float32"}), "metadata says dtype"),
    "nan": ("vop", {}, dict(edit=lambda t: t["visual"].__setitem__((0, 0, 0), np.nan)), "NaN or infinite"),
    "inf": ("vop-c", {}, dict(edit=lambda t: t["fc.bias"].__setitem__(3, -np.inf)), "NaN or infinite"),
    "inf in float16": ("vop", {}, dict(dtype=np.float16, edit=lambda t: t["text"].__setitem__((1, 1, 1), np.inf)),
                       "NaN or infinite"),
    "unknown config key": ("vop", {}, dict(meta_edit={"config": {"prompts": 2}}), "unknown setting"),
    "bad config value": ("vop", {}, dict(meta_edit={"config": {"visual_prompts": -1}}), "visual_prompts"),
    "config of another method": ("vop", {}, dict(meta_edit={"config": {"k_shallow": 2}}), "unknown setting"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_contents_are_one_line_errors(case):
    method, config, kwargs, needle = BAD[case]
    data = _file(method, config, **kwargs)
    parse_checkpoint_bytes(data)  # the layout is fine: only the contents are wrong
    with pytest.raises(InvalidCheckpointError) as err:
        parse_checkpoint_bytes(data, "x.safetensors", contents=True)
    message = str(err.value)
    assert message.startswith("x.safetensors: ") and "\n" not in message and needle in message, message


def test_unknown_method():
    with pytest.raises(UnknownMethodError, match="unknown prompt method 'vop-x'"):
        parse_checkpoint_bytes(checkpoint_bytes(1, method="vop-x"), contents=True)


def test_bfloat16_nan_is_caught_on_raw_bits():
    good = checkpoint_bytes(1)
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8:8 + n])
    meta = json.loads(header["__metadata__"]["vopstore"])
    meta["dtype"] = "bfloat16"
    header["__metadata__"]["vopstore"] = json.dumps(meta)
    body = b""
    for name, values in (("text", [0x3F80] * 8), ("visual", [0x3F80] * 7 + [0x7FC0])):  # 1.0 ... and one NaN
        header[name] = {"dtype": "BF16", "shape": [1, 1, 8], "data_offsets": [len(body), len(body) + 16]}
        body += struct.pack("<8H", *values)
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + body
    with pytest.raises(InvalidCheckpointError, match="'visual' holds NaN"):
        parse_checkpoint_bytes(data, contents=True)
    fixed = data[:-2] + struct.pack("<H", 0x3F80)
    parse_checkpoint_bytes(fixed, contents=True)


def test_checking_contents_does_not_import_torch():
    child = ("import sys; from tests.fixtures.stores import checkpoint_bytes; "
             "from vopstore.checkpoint import parse_checkpoint_bytes; "
             "parse_checkpoint_bytes(checkpoint_bytes(1), contents=True); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
