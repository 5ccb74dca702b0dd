"""Training step time with and without the prompt rows' wasted work (issue 12), per method, CPU.

One command::

    .venv/bin/python bench/bench_train_rows.py [--vitb32] [--steps 5] [--batch 8] [--frames 8]

Deep prompts are replaced by fresh ones at the next layer (and dropped before the
inter-frame layers, and never pooled in the text tower), so their queries, attention
outputs and MLP rows are computed for nothing. The training forward now lets fresh
prompts join the attention as keys and values only. "every prompt row" runs the
forward as it was (``full_rows=True``), "keys/values only" the current one; a step is
forward of both towers, the symmetric InfoNCE loss, backward, grad-clip and AdamW.
The two forwards alternate step by step (so a slow spell on this shared machine hits
both alike) and each figure is the median; the CPU time of the process is shown too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("vop", "vop-p", "vop-c", "vop-f", "vop-f+p", "vop-f+c")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps per forward and method (after 1 warm-up each)")
    p.add_argument("--batch", type=int, default=8, help="videos (and captions) per step")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--vitb32", action="store_true", help="the real ViT-B/32 architecture (slow on CPU)")
    p.add_argument("--hidden", type=int, default=192, help="vision width of the small CLIP (text: 2/3)")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--omp-passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE (see bench_runtime.py)")
    return p.parse_args(argv)


def build_backbone(args, folder: Path):
    from transformers import CLIPConfig

    from vopstore.backbone import load_backbone, save_random_backbone

    if args.vitb32:
        config = CLIPConfig()
    else:
        text_w = max(64, (args.hidden * 2 // 3) // 64 * 64)
        text = dict(vocab_size=49408, hidden_size=text_w, intermediate_size=4 * text_w,
                    num_attention_heads=text_w // 64,
                    num_hidden_layers=args.layers, max_position_embeddings=77, bos_token_id=49406,
                    eos_token_id=49407, pad_token_id=49407)
        vision = dict(hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                      num_attention_heads=args.hidden // 64, image_size=args.image_size, patch_size=16)
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=128)
    save_random_backbone(folder, config, seed=0)
    return load_backbone(folder)


def make_step(backbone, method, ids, pixels, full_rows: bool):
    """One training step of ``method`` with the forward chosen by ``full_rows``."""
    import torch

    from vopstore.prompts.forward import frames_forward, pool_frames, text_forward
    from vopstore.trainer.loss import contrastive_loss

    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.2)
    cls = type(method)

    def step() -> None:
        tensors = method.prompt_tensors()
        index = torch.zeros(ids.shape[0], dtype=torch.long)
        text_prompts = cls.text_prompts(method.config, tensors, index)
        video_prompts = cls.video_prompts(method.config, tensors, index, pixels.shape[1])
        text_prompts.full_rows = video_prompts.full_rows = full_rows
        text = text_forward(backbone, ids, text_prompts)
        video = pool_frames(frames_forward(backbone, pixels, video_prompts))
        loss = contrastive_loss(text, video, backbone.model.logit_scale.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def time_method(backbone, name: str, args) -> dict:
    import torch

    from vopstore.trainer.config import TrainConfig
    from vopstore.trainer.recipe import build_method_for

    method = build_method_for(TrainConfig(method=name, num_frames=args.frames, seed=0), backbone).train()
    generator = torch.Generator().manual_seed(0)
    size = backbone.image_size
    pixels = torch.randn(args.batch, args.frames, 3, size, size, generator=generator)
    ids = backbone.tokenize([f"a red circle moves from left to right {i}" for i in range(args.batch)],
                            method.text_tokens)
    steps = {"full": make_step(backbone, method, ids, pixels, True), "kv": make_step(backbone, method, ids, pixels,
                                                                                     False)}
    wall = {k: [] for k in steps}
    cpu = {k: [] for k in steps}
    for round_ in range(args.steps + 1):
        for key, step in steps.items():
            w, c = time.perf_counter(), time.process_time()
            step()
            if round_:  # the first round warms up
                wall[key].append(time.perf_counter() - w)
                cpu[key].append(time.process_time() - c)
    return {key: (statistics.median(wall[key]), statistics.median(cpu[key])) for key in steps}


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.omp_passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read when torch loads OpenMP, so before the import
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VOPSTORE_HOME"] = str(Path(tmp) / "home")
        backbone = build_backbone(args, Path(tmp) / "clip")
        vision = backbone.model.config.vision_config
        print(f"training step, CLIP vision {vision.num_hidden_layers} layers x {vision.hidden_size} at "
              f"{backbone.image_size} px, batch {args.batch} x {args.frames} frames, {args.threads} threads, "
              f"median of {args.steps} alternating steps (wall; CPU time in brackets)")
        print(f"  {'method':8s} {'every prompt row':>22s} {'keys/values only':>22s} {'speed-up':>16s}")
        for name in args.methods.split(","):
            t = time_method(backbone, name, args)
            (fw, fc), (kw, kc) = t["full"], t["kv"]
            print(f"  {name:8s} {fw:10.3f} s [{fc:6.3f} s] {kw:10.3f} s [{kc:6.3f} s] {fw / kw:7.2f}x [{fc / kc:.2f}x]",
                  flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
