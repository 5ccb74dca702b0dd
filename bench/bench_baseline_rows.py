"""Mixed-version batches of the co-batchable baselines (bias, proj, adapters): one forward vs one per version.

One command, prints medians and ratios measured in the same run:

    .venv/bin/python bench/bench_baseline_rows.py              # small CLIP (256/512 wide, 4 layers), CPU
    .venv/bin/python bench/bench_baseline_rows.py --vit-b32    # the ViT-B/32 architecture, random init

For each baseline, a 64-text batch and a 16-video batch (4 frames) whose rows use 16
different versions are encoded (a) in one forward with the per-row functions of
vopstore.baselines.rows, and (b) as 16 sub-batches, one forward per version (how a
server without per-row weights would serve it). The plain backbone (no baseline, the
same parametric forward) on the same batch is the 1.0 reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = 16


def median_s(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load(vit_b32: bool):
    from transformers import CLIPConfig

    from vopstore.backbone import load_backbone, save_random_backbone

    if vit_b32:
        config = CLIPConfig()
    else:
        text = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4}
        vision = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 4, "num_attention_heads": 8,
                  "image_size": 224, "patch_size": 32}
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=256)
    folder = save_random_backbone(Path(tempfile.mkdtemp()) / "clip", config, seed=0)
    return load_backbone(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vit-b32", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from vopstore.baselines import encode_text_rows, encode_video_rows, stack_baselines
    from vopstore.baselines.forward import frame_features, text_features
    from vopstore.prompts import build_method

    torch.set_num_threads(2)
    backbone = load(args.vit_b32)
    ids = backbone.tokenize([f"a person number {i} opens a red door and walks into the kitchen" for i in range(64)])
    pix = torch.randn(16, 4, 3, backbone.image_size, backbone.image_size)
    print(f"{'method':13} {'batch':6} {'plain s':>9} {'mixed s':>9} {'per-ver s':>9} {'mixed/plain':>12} "
          f"{'per-ver/mixed':>14}")
    for name in ("bias", "proj", "adapter-attn", "adapter-ffn"):
        versions = [build_method(name, backbone, seed=s) for s in range(VERSIONS)]
        cls, cfg, bank = type(versions[0]), versions[0].config, stack_baselines(versions)
        for kind, batch in (("text", ids), ("video", pix)):
            index = torch.arange(batch.shape[0]) % VERSIONS
            text = kind == "text"
            mixed_fn = encode_text_rows if text else encode_video_rows
            plain_fn = text_features if text else frame_features

            def plain():
                plain_fn(backbone, batch)

            def mixed():
                mixed_fn(backbone, batch, cls, cfg, bank, index)

            def per_version():
                for s, version in enumerate(versions):
                    encode = version.encode_text if text else version.encode_video
                    encode(backbone, batch[index == s])

            with torch.inference_mode():
                t_plain, t_mixed, t_each = (median_s(f, args.repeats) for f in (plain, mixed, per_version))
            print(f"{name:13} {kind:6} {t_plain:9.4f} {t_mixed:9.4f} {t_each:9.4f} {t_mixed / t_plain:12.2f} "
                  f"{t_each / t_mixed:14.2f}")


if __name__ == "__main__":
    main()
