"""Backbone loading, freezing, fingerprinting, and zero-prompt equivalence with transformers."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.fixtures.models import clip_param_count
from vopstore.backbone import load_backbone
from vopstore.errors import FileMissingError
from vopstore.prompts import encode_frames, encode_text, encode_video


def test_frozen_and_settings(tiny_backbone):
    assert not any(p.requires_grad for p in tiny_backbone.model.parameters())
    assert not tiny_backbone.model.training
    assert tiny_backbone.image_size == 32 and tiny_backbone.resize_size == 32
    assert tiny_backbone.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert len(tiny_backbone.fingerprint) == 64


def test_fingerprint_stable_across_loads_and_cached(tiny_backbone_dir, vopstore_home):
    first = load_backbone(tiny_backbone_dir)
    assert list((vopstore_home / "cache" / "fingerprints").glob("*.json"))
    assert load_backbone(tiny_backbone_dir).fingerprint == first.fingerprint


def test_fingerprint_changes_with_one_weight_byte(tiny_backbone, tiny_backbone_dir, tmp_path):
    copy = shutil.copytree(tiny_backbone_dir, tmp_path / "copy")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # last byte of the last tensor's data
    weights.write_bytes(bytes(data))
    assert load_backbone(copy).fingerprint != tiny_backbone.fingerprint


def test_fingerprint_covers_preprocessing(tiny_backbone, tiny_backbone_dir, tmp_path):
    copy = shutil.copytree(tiny_backbone_dir, tmp_path / "copy")
    config = json.loads((copy / "preprocessor_config.json").read_text())
    config["image_mean"] = [0.5, 0.5, 0.5]
    (copy / "preprocessor_config.json").write_text(json.dumps(config))
    changed = load_backbone(copy)
    assert changed.image_mean == (0.5, 0.5, 0.5) and changed.fingerprint != tiny_backbone.fingerprint


def test_missing_folder_and_uncached_hub_name(tmp_path):
    with pytest.raises(FileMissingError):
        load_backbone(tmp_path / "nope")
    with pytest.raises(FileMissingError):
        load_backbone(tmp_path)  # a folder without weights
    with pytest.raises(FileMissingError, match="not in the local Hugging Face cache"):
        load_backbone("vopstore-test/no-such-clip")


def _hub_answers(monkeypatch, error: Exception) -> None:
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


def _http_error(cls, status: int):
    import httpx

    response = httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/models/a/b"))
    return cls(f"{status} Client Error.\nMore detail on the next line", response=response)


def test_hub_auth_and_disk_errors_are_not_reported_as_a_cache_miss(monkeypatch):
    import errno

    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    from vopstore.errors import NotFoundError, PermissionDeniedError, StoreUnavailableError

    _hub_answers(monkeypatch, GatedRepoError("gated", response=_http_error(HfHubHTTPError, 403).response))
    with pytest.raises(PermissionDeniedError, match="gated on the Hugging Face Hub"):
        load_backbone("acme/gated-clip")
    _hub_answers(monkeypatch, _http_error(RepositoryNotFoundError, 401))
    with pytest.raises(NotFoundError, match="no backbone 'acme/private-clip' on the Hugging Face Hub"):
        load_backbone("acme/private-clip")
    _hub_answers(monkeypatch, _http_error(HfHubHTTPError, 403))
    with pytest.raises(PermissionDeniedError, match=r"refused backbone 'acme/clip' \(403 Client Error\.\); check"):
        load_backbone("acme/clip")
    _hub_answers(monkeypatch, _http_error(HfHubHTTPError, 503))
    with pytest.raises(StoreUnavailableError, match="refused backbone"):
        load_backbone("acme/clip")
    full = OSError(errno.ENOSPC, "No space left on device")
    _hub_answers(monkeypatch, full)
    with pytest.raises(OSError) as raised:
        load_backbone("acme/clip")
    assert raised.value is full  # the disk error itself, not "not in the local cache"


def _check_equivalence(backbone, texts, pixels):
    model = backbone.model
    ids = backbone.tokenize(texts)
    with torch.no_grad():
        ref_text = model.get_text_features(input_ids=ids).pooler_output
        flat = pixels.flatten(0, 1)
        ref_frames = model.get_image_features(pixel_values=flat).pooler_output.view(*pixels.shape[:2], -1)
        torch.testing.assert_close(encode_text(backbone, ids), ref_text, atol=1e-5, rtol=0)
        torch.testing.assert_close(encode_frames(backbone, pixels), ref_frames, atol=1e-5, rtol=0)
        pooled = torch.nn.functional.normalize(ref_frames, dim=-1).mean(1)
        torch.testing.assert_close(encode_video(backbone, pixels), pooled, atol=1e-5, rtol=0)


def test_zero_prompts_equal_transformers_tiny(tiny_backbone):
    torch.manual_seed(0)
    _check_equivalence(tiny_backbone, ["a photo of a cat", "two dogs run on the beach at dawn"],
                       torch.randn(2, 3, 3, 32, 32))


@pytest.mark.slow
def test_zero_prompts_equal_transformers_vit_b32(vitb32_backbone_dir):
    backbone = load_backbone(vitb32_backbone_dir)
    assert sum(p.numel() for p in backbone.model.parameters()) == clip_param_count(backbone.model.config)
    assert clip_param_count(backbone.model.config) == 151_277_313
    torch.manual_seed(0)
    _check_equivalence(backbone, ["a photo of a cat", "a dog"], torch.randn(1, 2, 3, 224, 224))
