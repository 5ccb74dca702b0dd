"""Training throughput and peak memory of the six VoP methods against full fine-tuning (CPU).

One command::

    .venv/bin/python bench/bench_train.py [--steps 5] [--batch 8] [--frames 8] [--json out.json]

Each variant runs in its own subprocess, so its peak resident memory
(``ru_maxrss``) is its own; the row also shows the peak minus the RSS measured
after the model is built (the training-time growth: activations, gradients,
optimiser state). Steps are timed one by one after two warm-up steps; the
median is reported. The frozen backbone is a random-init CLIP of the size
given (no decoding: random pixels and token ids), so this measures the
training step only. "full" unfreezes the whole CLIP (no prompts, same batch,
AdamW over every weight), the paper's "Full" baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = ("vop", "vop-p", "vop-c", "vop-f", "vop-f+p", "vop-f+c", "full")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (after 2 warm-up steps)")
    p.add_argument("--batch", type=int, default=8, help="videos per step")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--hidden", type=int, default=192, help="vision width (text width is 2/3 of it)")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--json", dest="json_out", default=None, help="also write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--backbone-dir", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build_backbone_dir(args, folder: Path) -> Path:
    from transformers import CLIPConfig

    from vopstore.backbone import save_random_backbone

    text_w = max(64, (args.hidden * 2 // 3) // 64 * 64)
    text = dict(vocab_size=49408, hidden_size=text_w, intermediate_size=4 * text_w, num_hidden_layers=args.layers,
                num_attention_heads=text_w // 64, max_position_embeddings=77, bos_token_id=49406,
                eos_token_id=49407, pad_token_id=49407)
    vision = dict(hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                  num_attention_heads=args.hidden // 64, image_size=args.image_size, patch_size=16)
    return save_random_backbone(folder, CLIPConfig(text_config=text, vision_config=vision, projection_dim=128), 0)


def child(args) -> dict:
    """Time ``args.steps`` training steps of one variant in this process; report medians and RSS."""
    import resource
    import time

    import torch

    torch.set_num_threads(args.threads)
    from vopstore.backbone import load_backbone
    from vopstore.prompts import encode_text, encode_video
    from vopstore.trainer.loss import contrastive_loss

    backbone = load_backbone(args.backbone_dir)
    full = args.child == "full"
    method = None
    if full:
        backbone.model.requires_grad_(True).train()
        params = list(backbone.model.parameters())
    else:
        from vopstore.trainer.config import TrainConfig
        from vopstore.trainer.recipe import build_method_for

        method = build_method_for(TrainConfig(method=args.child, num_frames=args.frames, seed=0), backbone).train()
        params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.2)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.batch, args.frames, 3, args.image_size, args.image_size, generator=gen)
    n_prompts = getattr(method, "text_tokens", 0) if method is not None else 0
    ids = backbone.tokenize([f"a red circle moves from left to right {i}" for i in range(args.batch)], n_prompts)
    rss_before = _rss_mb(resource)
    times = []
    for step in range(args.steps + 2):
        t0 = time.perf_counter()
        loss = contrastive_loss(encode_text(backbone, ids, method), encode_video(backbone, pixels, method),
                                backbone.model.logit_scale.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"variant": args.child, "trainable": sum(p.numel() for p in params), "step_s": med,
            "clips_per_s": args.batch / med, "peak_rss_mb": _rss_mb(resource),
            "train_growth_mb": _rss_mb(resource) - rss_before}


def _rss_mb(resource) -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def run_all(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("VOPSTORE_HOME", str(Path(tmp) / "home"))
        folder = build_backbone_dir(args, Path(tmp) / "clip")
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, "--child", variant, "--backbone-dir", str(folder),
                   *_forward(args)]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS":
                                                                           str(args.threads)})
            if done.returncode:
                raise SystemExit(f"{variant} failed:\n{done.stderr[-2000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {variant:8s} {rows[-1]['clips_per_s']:7.2f} clips/s", file=sys.stderr, flush=True)
    return rows


def _forward(args) -> list[str]:
    return ["--steps", str(args.steps), "--batch", str(args.batch), "--frames", str(args.frames), "--hidden",
            str(args.hidden), "--layers", str(args.layers), "--image-size", str(args.image_size),
            "--threads", str(args.threads)]


def report(rows: list[dict], args) -> None:
    full = next((r for r in rows if r["variant"] == "full"), None)
    print(f"CLIP {args.layers} layers, vision width {args.hidden}, {args.image_size} px, batch {args.batch} x "
          f"{args.frames} frames, {args.threads} threads, median of {args.steps} steps")
    print(f"{'variant':9s} {'trainable':>11s} {'clips/s':>8s} {'x full':>7s} {'peak MB':>8s} {'x full':>7s} "
          f"{'growth MB':>10s} {'x full':>7s}")
    for r in rows:
        speed = r["clips_per_s"] / full["clips_per_s"] if full else float("nan")
        peak = r["peak_rss_mb"] / full["peak_rss_mb"] if full else float("nan")
        growth = r["train_growth_mb"] / full["train_growth_mb"] if full and full["train_growth_mb"] else float("nan")
        print(f"{r['variant']:9s} {r['trainable']:11,d} {r['clips_per_s']:8.2f} {speed:7.2f} "
              f"{r['peak_rss_mb']:8.0f} {peak:7.2f} {r['train_growth_mb']:10.0f} {growth:7.2f}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = run_all(args)
    report(rows, args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
