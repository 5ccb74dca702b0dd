"""The prompt-set file format: one safetensors file, one canonical-JSON metadata key, same content -> same bytes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest

from tests.fixtures.stores import checkpoint_bytes
from vopstore.checkpoint import (FORMAT_VERSION, PromptSetMeta, inspect_checkpoint, load_checkpoint,
                                 parse_checkpoint_bytes, save_checkpoint)
from vopstore.core import sha256_file
from vopstore.errors import FileMissingError, InvalidCheckpointError

SAVE_IN_CHILD = """
import sys, torch
torch.set_num_threads(1)
from vopstore.checkpoint import PromptSetMeta, save_checkpoint
g = torch.Generator().manual_seed(0)
tensors = {"prompts.text": torch.randn(2, 4, 8, generator=g), "prompts.video": torch.randn(3, 8, generator=g)}
meta = PromptSetMeta(method="vop", config={"p": 4, "layers": [1, 2], "alpha": 0.5}, backbone_name="tiny",
                     backbone_fingerprint="ab" * 32, dtype="float32", params=88)
print(save_checkpoint(sys.argv[1], tensors, meta))
"""


def _tensors():
    import torch

    g = torch.Generator().manual_seed(0)
    return {"prompts.text": torch.randn(2, 4, 8, generator=g), "prompts.video": torch.randn(3, 8, generator=g)}


def _meta(**config_order):
    config = config_order or {"alpha": 0.5, "layers": [1, 2], "p": 4}
    return PromptSetMeta(method="vop", config=config, backbone_name="tiny", backbone_fingerprint="ab" * 32,
                         dtype="float32", params=88)


def test_round_trip(tmp_path):
    path = tmp_path / "p.safetensors"
    digest = save_checkpoint(path, _tensors(), _meta())
    info = inspect_checkpoint(path)
    assert info.sha256 == digest == sha256_file(path) and info.size == path.stat().st_size
    assert info.meta == _meta() and info.meta.format_version == FORMAT_VERSION
    assert info.tensors == {"prompts.text": ("F32", (2, 4, 8)), "prompts.video": ("F32", (3, 8))}
    meta, tensors = load_checkpoint(path)
    assert meta == _meta()
    for name, tensor in _tensors().items():
        assert tensors[name].equal(tensor)
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"]  # the atomic write leaves no temp file


def test_same_content_same_bytes_across_processes(tmp_path):
    here = tmp_path / "here.safetensors"
    digest = save_checkpoint(here, _tensors(), _meta(p=4, layers=[1, 2], alpha=0.5))  # other key order
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = tmp_path / "there.safetensors"
    out = subprocess.run([sys.executable, "-c", SAVE_IN_CHILD, str(there)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == digest and there.read_bytes() == here.read_bytes()


def test_numpy_writer_used_by_store_tests_matches_torch(tmp_path):
    import torch

    from tests.fixtures.stores import TINY_VOP_CONFIG, tiny_vop_tensors
    from vopstore.prompts.configs import VopConfig

    meta = PromptSetMeta(method="vop", config=VopConfig(**TINY_VOP_CONFIG).to_dict(), backbone_name="tiny",
                         backbone_fingerprint="ab" * 32, dtype="float32", params=16)
    tensors = {name: torch.from_numpy(array.copy()) for name, array in tiny_vop_tensors(3).items()}
    save_checkpoint(tmp_path / "t.safetensors", tensors, meta)
    assert (tmp_path / "t.safetensors").read_bytes() == checkpoint_bytes(3)


def _with_header(data: bytes, edit) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


def _meta_edit(**changes):
    def edit(header):
        meta = json.loads(header["__metadata__"]["vopstore"])
        meta.update(changes)
        header["__metadata__"]["vopstore"] = json.dumps(meta)
    return edit


GOOD = checkpoint_bytes(1)
BAD = {
    "empty": b"",
    "short": b"\x01\x02",
    "not safetensors": b"PK\x03\x04 a zip file, not a checkpoint",
    "huge header length": struct.pack("<Q", 1 << 40) + b"{}",
    "header not json": struct.pack("<Q", 4) + b"nope",
    "appended byte": GOOD + b"\x00",
    "no metadata": _with_header(GOOD, lambda h: h.pop("__metadata__")),
    "extra metadata key": _with_header(GOOD, lambda h: h["__metadata__"].update(other="x")),
    "missing field": _with_header(GOOD, _meta_edit(method=None)),
    "newer format": _with_header(GOOD, _meta_edit(format_version=FORMAT_VERSION + 1)),
    "params mismatch": _with_header(GOOD, _meta_edit(params=15)),
    "bool params": _with_header(GOOD, _meta_edit(params=True)),
    "no tensors": _with_header(GOOD, lambda h: [h.pop(k) for k in list(h) if k != "__metadata__"]),
    "bad dtype": _with_header(GOOD, lambda h: h["text"].update(dtype="F128")),
    "shape vs bytes": _with_header(GOOD, lambda h: h["text"].update(shape=[1, 1, 7])),
    "method too long": _with_header(GOOD, _meta_edit(method="m" * 65)),
    "dtype too long": _with_header(GOOD, _meta_edit(dtype="d" * 33)),
    "backbone name too long": _with_header(GOOD, _meta_edit(backbone_name="b" * 256)),
    "short fingerprint": _with_header(GOOD, _meta_edit(backbone_fingerprint="ab" * 31)),
    "long fingerprint": _with_header(GOOD, _meta_edit(backbone_fingerprint="ab" * 33)),
    "uppercase fingerprint": _with_header(GOOD, _meta_edit(backbone_fingerprint="AB" * 32)),
    "non-hex fingerprint": _with_header(GOOD, _meta_edit(backbone_fingerprint="zz" * 32)),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_files_are_refused(name):
    with pytest.raises(InvalidCheckpointError) as err:
        parse_checkpoint_bytes(BAD[name], "x.safetensors")
    assert str(err.value).startswith("x.safetensors: ") and "\n" not in str(err.value)


def test_every_truncation_is_refused():
    for cut in range(0, len(GOOD), 7):
        with pytest.raises(InvalidCheckpointError):
            parse_checkpoint_bytes(GOOD[:cut])
    parse_checkpoint_bytes(GOOD)


def test_missing_file(tmp_path):
    with pytest.raises(FileMissingError):
        inspect_checkpoint(tmp_path / "absent.safetensors")
    with pytest.raises(FileMissingError):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_text_fields_at_the_column_limits_are_accepted():
    edit = _meta_edit(method="m" * 64, dtype="d" * 32, backbone_name="b" * 255, backbone_fingerprint="0f" * 32)
    meta, _ = parse_checkpoint_bytes(_with_header(GOOD, edit))
    assert (len(meta.method), len(meta.dtype), len(meta.backbone_name)) == (64, 32, 255)
