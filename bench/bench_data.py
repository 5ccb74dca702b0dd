"""Data pipeline benchmark: frames/s decoding with PyAV vs reading the frame cache.

Writes a synthetic task, then times, per mode, one pass over every clip
(``--repeats`` times, reporting the median): eval frames (uniform) decoded,
eval frames from a warm cache, training frames (random offsets) decoded,
training frames from a warm candidate cache, and the full dataset item
(frames + CLIP preprocessing) both ways. Prints JSON.

    .venv/bin/python bench/bench_data.py --clips 16 --size 224 --frames 96
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed_pass(fn, n_items: int, frames_per_item: int, repeats: int) -> dict:
    """Median frames/s over ``repeats`` passes of ``fn(i)`` for every item."""
    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(n_items):
            fn(i, r)
        rates.append(n_items * frames_per_item / (time.perf_counter() - start))
    return {"frames_per_s": round(statistics.median(rates), 1), "runs": [round(x, 1) for x in rates]}


def run(args) -> dict:
    from vopstore.trainer.data import VideoTextDataset, generate_synthetic_task, read_split

    work = Path(args.workdir or tempfile.mkdtemp(prefix="vopstore-bench-"))
    task = generate_synthetic_task(work / "task", n_train=args.clips, n_test=0, seed=0,
                                   size=args.size, frames=args.frames)
    samples = read_split(task.format, task.root, "train")
    f = args.num_frames
    common = dict(num_frames=f, image_size=args.image_size, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28),
                  flip=False)
    datasets = {
        "eval": VideoTextDataset(samples, train=False, **common),
        "eval_cached": VideoTextDataset(samples, train=False, cache_dir=work / "cache", **common),
        "train": VideoTextDataset(samples, train=True, **common),
        "train_cached": VideoTextDataset(samples, train=True, cache_dir=work / "cache", **common),
    }
    for name in ("eval_cached", "train_cached"):  # warm the cache: later epochs are what it speeds up
        for i in range(len(samples)):
            datasets[name].frames(i, np.random.default_rng(i))
    out = {"clips": len(samples), "video": f"{args.size}x{args.size}x{args.frames}", "num_frames": f,
           "repeats": args.repeats, "threads": torch.get_num_threads()}
    for name, ds in datasets.items():
        out[f"{name}_frames"] = timed_pass(lambda i, r, ds=ds: ds.frames(i, np.random.default_rng((r, i))),
                                           len(samples), f, args.repeats)
        out[f"{name}_items"] = timed_pass(lambda i, r, ds=ds: ds[i], len(samples), f, args.repeats)
    for mode in ("eval", "train"):
        for what in ("frames", "items"):
            cached = out[f"{mode}_cached_{what}"]["frames_per_s"]
            out[f"speedup_{mode}_{what}"] = round(cached / out[f"{mode}_{what}"]["frames_per_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="video side in pixels")
    parser.add_argument("--frames", type=int, default=96, help="frames per video")
    parser.add_argument("--num-frames", type=int, default=12, help="frames sampled per clip")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
