"""The vendored CLIP tokenizer reproduces OpenAI's ids exactly."""

from __future__ import annotations

import pytest

from vopstore.tokenizer import VOCAB_SIZE, clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


def test_known_ids(tokenizer):
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_vocabulary_size_and_specials(tokenizer):
    assert len(tokenizer) == VOCAB_SIZE == 49408
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert tokenizer.convert_ids_to_tokens([0, 255, 256, 511, 512]) == ["!", "Ń", "!</w>", "Ń</w>", "in"]


def test_round_trip_through_saved_files(tokenizer, tmp_path):
    from transformers import CLIPTokenizer

    tokenizer.save_pretrained(str(tmp_path))
    again = CLIPTokenizer.from_pretrained(str(tmp_path))
    text = "A Man's bicycle, 12 wheels; naïve café!"
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert tokenizer.decode(tokenizer("A photo of a cat")["input_ids"], skip_special_tokens=True) == "a photo of a cat"


def test_backbone_tokenize_truncates_keeping_sot_and_eot(tiny_backbone):
    ids = tiny_backbone.tokenize(["word " * 200, "a cat"], n_prompts=8)
    assert ids.shape == (2, 69)
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407 and (ids[0, 1:-1] != 49407).all()
    assert ids[1, :4].tolist() == [49406, 320, 2368, 49407]
    assert tiny_backbone.tokenize(["a cat"]).shape == (1, 4)  # padded to the longest, not to 77
