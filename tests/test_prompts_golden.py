"""Golden embeddings of every method on the tiny CLIP (regenerate with tests/golden/make_golden.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden" / "prompts.safetensors"


@pytest.fixture(scope="module")
def computed(tiny_backbone):
    from tests.golden.make_golden import compute

    return compute(tiny_backbone)


@pytest.fixture(scope="module")
def golden():
    from safetensors.torch import load_file

    return load_file(str(GOLDEN))


def test_golden_covers_every_method(golden):
    from vopstore.prompts import METHODS

    assert set(golden) == {f"{m}.{kind}" for m in [*METHODS, "zero-shot"] for kind in ("text", "video")}


@pytest.mark.parametrize("key", sorted(["zero-shot.text", "zero-shot.video"] +
                                       [f"{m}.{k}" for m in ("vop", "vop-p", "vop-c", "vop-f", "vop-f+p", "vop-f+c")
                                        for k in ("text", "video")]))
def test_matches_golden(computed, golden, key):
    torch.testing.assert_close(computed[key], golden[key], atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["vop", "vop-p", "vop-c", "vop-f", "vop-f+p", "vop-f+c"])
def test_golden_is_sensitive_to_the_prompts(golden, method):
    # if the prompts barely moved the output, a forward that ignored them would still match the golden
    assert (golden[f"{method}.video"] - golden["zero-shot.video"]).abs().max() > 1e-3
    assert (golden[f"{method}.text"] - golden["zero-shot.text"]).abs().max() > 1e-3
