"""The six VoP methods: exact parameter counts, shapes, text invariances, gradients, banks."""

from __future__ import annotations

import pytest
import torch

from vopstore.errors import ConfigError, UnknownMethodError
from vopstore.prompts import (METHODS, build_method, encode_text, encode_text_bank, encode_video,
                              encode_video_bank, stack_prompt_sets)
from vopstore.prompts.registry import VIT_B32_PARAMS, build_meta, method_table

# Paper Table 1 counts (spec §1-5); the F methods also train a 12 x 768 frame position embedding.
PAPER = {"vop": 122_880, "vop-p": 528_384, "vop-c": 14_257_152, "vop-f": 122_880,
         "vop-f+p": 393_216, "vop-f+c": 14_269_440}
FRAME_POS = {"vop-f": 9_216, "vop-f+p": 9_216, "vop-f+c": 9_216}
TINY = {"k_shallow": 2}  # the tiny backbone has 3 vision layers


def tiny_method(name, backbone, seed=0, **config):
    return build_method(name, backbone, seed=seed, **({**TINY, **config} if "-f" in name else config))


def test_registry_has_the_six_methods():
    assert list(METHODS) == ["vop", "vop-p", "vop-c", "vop-f", "vop-f+p", "vop-f+c"]


@pytest.mark.parametrize("name", list(PAPER))
def test_vit_b32_parameter_counts_match_the_paper(name):
    method = build_meta(name)
    assert method.paper_params() == PAPER[name]
    assert method.trainable_params() == PAPER[name] + FRAME_POS.get(name, 0)


def test_method_table_rows():
    rows = {row["name"]: row for row in method_table()}
    assert rows["vop"]["share"] == pytest.approx(122_880 / VIT_B32_PARAMS)
    assert rows["vop-p"]["paper_share"] == pytest.approx(0.00441, abs=1e-5)
    assert rows["vop-f+p"]["uncounted"] == ["frame_pos"] and rows["vop-f+p"]["uncounted_params"] == 9_216


def test_vit_b32_param_constant_matches_transformers():
    from transformers import CLIPConfig, CLIPModel

    from tests.fixtures.models import clip_param_count

    with torch.device("meta"):
        model = CLIPModel(CLIPConfig())
    assert sum(p.numel() for p in model.parameters()) == clip_param_count(CLIPConfig()) == VIT_B32_PARAMS


def test_unknown_method_and_bad_config(tiny_backbone):
    with pytest.raises(UnknownMethodError, match="vop-x"):
        build_method("vop-x", tiny_backbone)
    with pytest.raises(ConfigError, match="k_shallow"):
        build_method("vop-f", tiny_backbone, k_shallow=3)
    with pytest.raises(ConfigError, match="unknown setting"):
        build_method("vop", tiny_backbone, visual_promts=8)
    with pytest.raises(ConfigError, match="text_prompts must be an integer >= 0, got -1"):
        build_method("vop", tiny_backbone, text_prompts=-1)


@pytest.mark.parametrize("name", list(METHODS))
def test_shapes_for_1_4_12_frames(tiny_backbone, name):
    method = tiny_method(name, tiny_backbone)
    ids = tiny_backbone.tokenize(["a photo of a cat", "a dog"], method.text_tokens)
    with torch.no_grad():
        assert encode_text(tiny_backbone, ids, method).shape == (2, 16)
        for frames in (1, 4, 12):
            video = encode_video(tiny_backbone, torch.randn(2, frames, 3, 32, 32), method)
            assert video.shape == (2, 16) and torch.isfinite(video).all()


def test_too_many_frames_for_a_position_table(tiny_backbone):
    method = tiny_method("vop-p", tiny_backbone, num_frames=4)
    with pytest.raises(ConfigError, match="at most 4 frames"):
        encode_video(tiny_backbone, torch.randn(1, 5, 3, 32, 32), method)


@pytest.mark.parametrize("layout", ["prefix", "released"])
def test_padding_and_batch_do_not_change_a_text_embedding(tiny_backbone, layout):
    method = tiny_method("vop", tiny_backbone, text_layout=layout)
    with torch.no_grad():
        alone = encode_text(tiny_backbone, tiny_backbone.tokenize(["a cat"], 8), method)
        ids = tiny_backbone.tokenize(["a cat", "a much longer caption about a cat sitting on a red sofa"], 8)
        padded = torch.nn.functional.pad(ids, (0, 20), value=49407)
        assert ids.shape[1] < padded.shape[1] <= 69
        torch.testing.assert_close(encode_text(tiny_backbone, ids, method)[:1], alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(encode_text(tiny_backbone, padded, method)[:1], alone, atol=1e-5, rtol=0)


def test_text_prompts_are_used_and_too_long_text_is_refused(tiny_backbone):
    method = tiny_method("vop", tiny_backbone)
    ids = tiny_backbone.tokenize(["a cat"], 8)
    with torch.no_grad():
        assert not torch.allclose(encode_text(tiny_backbone, ids, method), encode_text(tiny_backbone, ids), atol=1e-4)
    with pytest.raises(ConfigError, match="n_prompts=8"):
        encode_text(tiny_backbone, tiny_backbone.tokenize(["word " * 100]), method)


@pytest.mark.parametrize("name", list(METHODS))
def test_gradient_only_into_prompts_backbone_bit_identical(tiny_backbone, name):
    method = tiny_method(name, tiny_backbone)
    before = {k: v.clone() for k, v in tiny_backbone.model.state_dict().items()}
    start = {k: v.detach().clone() for k, v in method.named_parameters()}
    optimiser = torch.optim.AdamW(method.parameters(), lr=1e-2, weight_decay=0.2)
    ids = tiny_backbone.tokenize(["a cat", "a dog"], method.text_tokens)
    video = encode_video(tiny_backbone, torch.randn(2, 3, 3, 32, 32), method)
    loss = (encode_text(tiny_backbone, ids, method) * video).sum()
    loss.backward()
    assert all(p.grad is None for p in tiny_backbone.model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters()), \
        [n for n, p in method.named_parameters() if p.grad is None]
    optimiser.step()
    after = tiny_backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(start[k], v) for k, v in method.named_parameters())


@pytest.mark.parametrize("name", ["vop", "vop-p", "vop-c", "vop-f+p", "vop-f+c"])
def test_bank_rows_equal_each_set_alone(tiny_backbone, name):
    sets = [tiny_method(name, tiny_backbone, seed=s) for s in range(3)]
    bank = stack_prompt_sets(sets)
    index = torch.tensor([2, 0, 2, 1])
    ids = tiny_backbone.tokenize(["a cat", "a dog", "two birds", "a red car"], sets[0].text_tokens)
    pixels = torch.randn(4, 3, 3, 32, 32)
    cls, config = type(sets[0]), sets[0].config
    with torch.no_grad():
        text = encode_text_bank(tiny_backbone, ids, cls, config, bank, index)
        video = encode_video_bank(tiny_backbone, pixels, cls, config, bank, index)
        for row, s in enumerate(index.tolist()):
            alone_t = encode_text(tiny_backbone, ids[row : row + 1], sets[s])
            alone_v = encode_video(tiny_backbone, pixels[row : row + 1], sets[s])
            torch.testing.assert_close(text[row : row + 1], alone_t, atol=1e-5, rtol=0)
            torch.testing.assert_close(video[row : row + 1], alone_v, atol=1e-5, rtol=0)
    assert not torch.allclose(video[0], encode_video(tiny_backbone, pixels[:1], sets[0])[0], atol=1e-5)
