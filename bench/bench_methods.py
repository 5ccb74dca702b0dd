"""Forward+backward time and peak memory of every VoP method against full fine-tuning, on the same batch.

One command; prints medians and ratios to full fine-tuning:

    .venv/bin/python bench/bench_methods.py                 # tiny CLIP + ViT-B/32 architecture, CPU
    .venv/bin/python bench/bench_methods.py --device cuda   # the same on a GPU
    .venv/bin/python bench/bench_methods.py --setups small --methods full,vop,bias,adapter-ffn

Each (backbone, method) runs in its own subprocess so that peak memory is its own:
on CUDA ``torch.cuda.max_memory_allocated``; on CPU the growth of the process's peak
RSS over its RSS once the backbone and inputs are loaded (so it counts the method's own
tensors, gradients, AdamW state and activations, not the frozen backbone). Weights are
random (no download); timing does not depend on their values. One step = forward of
the texts and videos, a contrastive-style loss, backward, AdamW step.

Any trainable method can be measured (the VoP family and the baselines, built with the
settings the trainer derives for the backbone). ``full`` is full fine-tuning as
``vopstore train --method full`` runs it: a trainable copy of the weights beside the
frozen backbone. ``full-in-place`` trains the backbone's own weights (no copy), the
cheapest possible full fine-tune, for reference. bench_compare_methods.py reuses
:func:`step_row` for its per-method training columns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IN_PLACE = "full-in-place"  # the backbone's own weights train: method None
METHODS = ["full", IN_PLACE, "vop", "vop-p", "vop-c", "vop-f", "vop-f+p", "vop-f+c"]
SETUPS = {  # name -> (videos, frames, repeats)
    "tiny": (4, 4, 5),
    "small": (4, 2, 3),
    "vit-b32": (2, 4, 3),
}


def clip_config(setup: str):
    from transformers import CLIPConfig

    if setup == "vit-b32":
        return CLIPConfig()
    if setup == "small":  # ViT-B/32's 224 px / 32 px patches (50 tokens a frame), 4 narrow layers per tower
        text = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4}
        vision = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
                  "image_size": 224, "patch_size": 32}
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=128)
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.models import tiny_clip_config

    return tiny_clip_config()


def method_settings(method_name: str, backbone, frames: int) -> dict:
    """The settings the trainer completes for ``method_name`` on ``backbone`` fed ``frames`` frames."""
    from vopstore.prompts.configs import Dims, complete_settings

    return complete_settings(method_name, Dims.from_clip_config(backbone.model.config), frames, {})


def _rss_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(folder: str, setup: str, method_name: str, device: str) -> dict:
    """Time ``repeats`` training steps (after one warm-up) of one method; return the measurements."""
    import torch

    from vopstore.backbone import load_backbone
    from vopstore.prompts import build_method, encode_text, encode_video

    torch.manual_seed(0)
    videos, frames, repeats = SETUPS[setup]
    backbone = load_backbone(folder, device=device)
    size = backbone.image_size
    pixels = torch.randn(videos, frames, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):  # before the method is built: its own tensors count (a full copy does)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_now_mb()
    if method_name == IN_PLACE:
        method = None
        backbone.model.requires_grad_(True)
    else:
        method = build_method(method_name, backbone, **method_settings(method_name, backbone, frames))
    module = backbone.model if method is None else method
    params = [p for p in module.parameters() if p.requires_grad]  # full stores logit_scale but does not train it
    optimiser = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.2)
    ids = backbone.tokenize([f"caption number {i} about a video" for i in range(videos)],
                            0 if method is None else method.text_tokens)
    times = []
    for step in range(repeats + 1):
        sync()
        start = time.perf_counter()
        text = torch.nn.functional.normalize(encode_text(backbone, ids, method), dim=-1)
        video = encode_video(backbone, pixels, method, normalize=True)
        logits = 100 * text @ video.T
        labels = torch.arange(videos, device=device)
        loss = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        sync()
        if step:  # the first step pays for lazy initialisation
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else _rss_peak_mb()
    return {"setup": setup, "method": method_name, "trainable": sum(p.numel() for p in params),
            "median_s": statistics.median(times), "peak_mb": peak - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--setups", default="tiny,vit-b32")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--_one", nargs=3, help=argparse.SUPPRESS)  # folder setup method (subprocess mode)
    args = parser.parse_args()
    if args._one:
        import torch

        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
        print(json.dumps(run_one(*args._one, device=args.device)))
        return
    for setup in args.setups.split(","):
        report(setup, bench_setup(setup, args.methods.split(","), args.device), args.device)


def step_row(folder: str, setup: str, method_name: str, device: str, home: str) -> dict:
    """:func:`run_one` in a fresh subprocess (its peak memory is its own), with ``home`` as VOPSTORE_HOME.

    Raises:
        RuntimeError: the subprocess failed; the message is the last line it wrote to stderr.
    """
    env = {**os.environ, "VOPSTORE_HOME": home, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--device", device, "--_one", folder, setup, method_name]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise RuntimeError(f"training step of {method_name} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_setup(setup: str, methods: list[str], device: str) -> list[dict]:
    from vopstore.backbone import save_random_backbone

    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as home:
        save_random_backbone(folder, clip_config(setup), seed=0)
        rows = []
        for name in methods:
            rows.append(step_row(folder, setup, name, device, home))
            print(f"  {setup} {name}: {rows[-1]['median_s'] * 1000:.0f} ms", file=sys.stderr)
        return rows


def report(setup: str, rows: list[dict], device: str) -> None:
    full = next((r for r in rows if r["method"] == "full"), rows[0])
    videos, frames, repeats = SETUPS[setup]
    print(f"\n{setup} on {device}: {videos} videos x {frames} frames + {videos} texts, median of {repeats} steps")
    print(f"{'method':13} {'trainable':>12} {'fwd+bwd+step ms':>16} {'x full':>7} {'peak MB':>9} {'x full':>7}")
    for r in rows:
        print(f"{r['method']:13} {r['trainable']:>12,} {r['median_s'] * 1000:>16.1f} "
              f"{r['median_s'] / full['median_s']:>7.2f} {r['peak_mb']:>9.1f} "
              f"{r['peak_mb'] / full['peak_mb'] if full['peak_mb'] > 0 else float('nan'):>7.2f}")


if __name__ == "__main__":
    main()
