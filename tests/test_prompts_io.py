"""Prompt sets save to one checkpoint file and load back exactly, onto the right backbone only."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vopstore.checkpoint import inspect_checkpoint, load_checkpoint, save_checkpoint
from vopstore.errors import BackboneMismatchError, UnknownMethodError
from vopstore.prompts import build_method, encode_text, encode_video, load_prompt_set


@pytest.mark.parametrize("name", ["vop", "vop-f+c"])
def test_save_load_identical_outputs(tiny_backbone, tmp_path, name):
    config = {"k_shallow": 2, "num_frames": 4} if "-f" in name else {}
    method = build_method(name, tiny_backbone, seed=3, **config)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # "trained": not the seed's init
    digest = method.save(tmp_path / "a.safetensors", tiny_backbone)
    assert method.save(tmp_path / "b.safetensors", tiny_backbone) == digest  # same content, same bytes
    info = inspect_checkpoint(tmp_path / "a.safetensors")
    assert info.sha256 == digest and info.meta.method == name and info.meta.params == method.trainable_params()
    assert info.meta.backbone_fingerprint == tiny_backbone.fingerprint and info.meta.config["k_shallow" if config
                                                                                           else "text_prompts"]
    loaded = load_prompt_set(tmp_path / "a.safetensors", tiny_backbone)
    assert type(loaded) is type(method) and loaded.config == method.config
    ids = tiny_backbone.tokenize(["a cat on a mat"], 8)
    pixels = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(encode_text(tiny_backbone, ids, loaded), encode_text(tiny_backbone, ids, method))
        assert torch.equal(encode_video(tiny_backbone, pixels, loaded), encode_video(tiny_backbone, pixels, method))


def test_other_backbone_is_refused(tiny_backbone, tmp_path):
    method = build_method("vop", tiny_backbone)
    other = dataclasses.replace(tiny_backbone, fingerprint="0" * 64, name="other-clip")
    method.save(tmp_path / "p.safetensors", other)
    with pytest.raises(BackboneMismatchError, match="other-clip"):
        load_prompt_set(tmp_path / "p.safetensors", tiny_backbone)


def test_unknown_method_in_file_is_refused(tiny_backbone, tmp_path):
    method = build_method("vop", tiny_backbone)
    method.save(tmp_path / "p.safetensors", tiny_backbone)
    meta, tensors = load_checkpoint(tmp_path / "p.safetensors")
    save_checkpoint(tmp_path / "q.safetensors", tensors, dataclasses.replace(meta, method="vop-zz"))
    with pytest.raises(UnknownMethodError, match="vop-zz"):
        load_prompt_set(tmp_path / "q.safetensors", tiny_backbone)
