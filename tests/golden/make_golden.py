"""Regenerate tests/golden/prompts.safetensors: text and video embeddings of every method on the tiny CLIP.

Run from the repository root ONLY when the forward is meant to change, and say why in the commit:

    .venv/bin/python tests/golden/make_golden.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("prompts.safetensors")
TEXTS = ["a photo of a cat", "two dogs run along a beach at dawn"]
METHOD_SEED = 7
FRAMES = 4


def golden_inputs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(11)
    return torch.randn(2, FRAMES, 3, 32, 32, generator=generator)


def method_config(name: str) -> dict:
    return {"k_shallow": 2, "num_frames": FRAMES} if "-f" in name else {}


def compute(backbone) -> dict[str, torch.Tensor]:
    """Every golden tensor for ``backbone`` (the tiny CLIP of tests/fixtures/models.py)."""
    from vopstore.prompts import METHODS, build_method, encode_text, encode_video

    pixels, out = golden_inputs(), {}
    with torch.no_grad():
        for name in METHODS:
            method = build_method(name, backbone, seed=METHOD_SEED, **method_config(name))
            ids = backbone.tokenize(TEXTS, method.text_tokens)
            out[f"{name}.text"] = encode_text(backbone, ids, method)
            out[f"{name}.video"] = encode_video(backbone, pixels, method)
        out["zero-shot.text"] = encode_text(backbone, backbone.tokenize(TEXTS))
        out["zero-shot.video"] = encode_video(backbone, pixels)
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    from safetensors.torch import save_file

    from tests.fixtures.models import TINY_SEED, tiny_clip_config
    from vopstore.backbone import load_backbone, save_random_backbone

    with tempfile.TemporaryDirectory() as folder:
        backbone = load_backbone(save_random_backbone(folder, tiny_clip_config(), seed=TINY_SEED))
        save_file({k: v.contiguous() for k, v in compute(backbone).items()}, str(OUT))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
