"""Data pipeline benchmark: decoding vs the frame cache, and the training feed with 0 and 2 workers.

Writes a synthetic task (real mp4 files), then

* per mode, one pass over every clip (``--repeats`` times, median frames/s): eval frames
  (uniform; also the default training frames) decoded, from a warm cache, training frames
  of the ``random`` option decoded, from a warm candidate cache, and the full dataset item (frames + CLIP preprocessing) both ways;
* training clips/s through the real training feed (``trainer.batches.train_batches``:
  the step sampler, a DataLoader, collate) with 0 and ``--workers`` worker processes,
  and through ``recipe.train`` itself (a tiny random CLIP, so decoding dominates as it
  does on real video), median of ``--repeats`` runs each, with the ratio.

Prints JSON.

    .venv/bin/python bench/bench_data.py --clips 16 --size 224 --frames 96
"""

from __future__ import annotations

import argparse
import json
import resource
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

    work = Path(args.workdir)
    task = generate_synthetic_task(work / "task", n_train=args.clips, n_test=0, seed=0,
                                   size=args.size, frames=args.frames)
    samples = read_split(task.format, task.root, "train")
    f = args.num_frames
    common = dict(num_frames=f, image_size=args.image_size, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28),
                  flip=False)
    datasets = {
        "eval": VideoTextDataset(samples, train=False, **common),
        "eval_cached": VideoTextDataset(samples, train=False, cache_dir=work / "cache", **common),
        "train": VideoTextDataset(samples, train=True, sampling="random", **common),
        "train_cached": VideoTextDataset(samples, train=True, sampling="random", cache_dir=work / "cache",
                                         **common),
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
    out["training_feed"] = compare_workers(lambda w, r: feed_rate(samples, args, w, r), args)
    out["training_loop"] = compare_workers(lambda w, r: train_rate(samples, args, work, w, r), args)
    return out


def compare_workers(rate, args) -> dict:
    """Medians of ``rate(workers, repeat)`` with 0 and ``args.workers`` workers, interleaved, and their ratio.

    Besides clips/s, the CPU time per clip of this process and its (reaped) workers: unlike the wall
    clock it hardly moves with other load on the machine, so it shows what the workers cost.
    """
    runs: dict[int, list[tuple[float, float]]] = {0: [], args.workers: []}
    for r in range(args.repeats):
        for workers in runs:  # interleaved, so drifting machine load hits both alike
            runs[workers].append(with_cpu(lambda: rate(workers, r)))
    out = {}
    for w, pairs in runs.items():
        out[f"workers_{w}"] = {"clips_per_s": round(statistics.median(p[0] for p in pairs), 2),
                               "cpu_ms_per_clip": round(statistics.median(p[1] for p in pairs), 1),
                               "runs": [round(p[0], 2) for p in pairs]}
    out["ratio"] = round(out[f"workers_{args.workers}"]["clips_per_s"] / out["workers_0"]["clips_per_s"], 2)
    return out


def with_cpu(measure) -> tuple[float, float]:
    """(clips/s, CPU ms per clip) of ``measure()``, which returns (clips/s, clips)."""
    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    before = cpu()
    rate, clips = measure()
    return rate, 1000 * (cpu() - before) / clips


def feed_rate(samples, args, workers: int, repeat: int) -> tuple[float, int]:
    """Clips/s of the training feed alone over ``args.epochs`` epochs (worker start-up included), and clips."""
    from vopstore.trainer.batches import StepSampler, steps_per_epoch, train_batches
    from vopstore.trainer.data import VideoTextDataset

    dataset = VideoTextDataset(samples, num_frames=args.num_frames, image_size=args.image_size,
                               mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28), train=True, seed=repeat)
    per_epoch = steps_per_epoch(len(samples), args.batch, 1, 1)
    sampler = StepSampler(len(samples), args.batch, 1, per_epoch, seed=repeat, end=per_epoch * args.epochs)
    start, clips = time.perf_counter(), 0
    for step in train_batches(dataset, sampler, workers):
        clips += sum(len(batch["captions"]) for batch in step)
    return clips / (time.perf_counter() - start), clips


def train_rate(samples, args, work: Path, workers: int, repeat: int) -> tuple[float, int]:
    """Clips/s that ``recipe.train`` reports for ``args.epochs`` epochs of VoP on a tiny random CLIP, and clips."""
    from vopstore.trainer import recipe
    from vopstore.trainer.config import TrainConfig

    backbone_dir = tiny_backbone(work / "backbone", args.image_size)
    cfg = TrainConfig(method="vop", backbone=str(backbone_dir), num_frames=args.num_frames, batch_size=args.batch,
                      epochs=args.epochs, num_workers=workers, seed=repeat, hflip=False)
    run = recipe.setup(cfg, samples, work / "runs" / f"w{workers}-r{repeat}", device="cpu")
    summary = recipe.train(run, progress=False)
    return summary["clips_per_s"], summary["steps"] * args.batch


def tiny_backbone(folder: Path, image_size: int) -> Path:
    """A 2-layer, 64-wide random CLIP taking ``image_size`` px images: its step costs little next to decoding."""
    from transformers import CLIPConfig

    from vopstore.backbone import save_random_backbone

    if (folder / "config.json").is_file():
        return folder
    text = dict(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=32)
    return save_random_backbone(folder, CLIPConfig(text_config=text, vision_config=vision, projection_dim=32), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="video side in pixels")
    parser.add_argument("--frames", type=int, default=96, help="frames per video")
    parser.add_argument("--num-frames", type=int, default=12, help="frames sampled per clip")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers compared with 0")
    parser.add_argument("--batch", type=int, default=4, help="training batch (clips per step)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training-feed measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="keep the videos, cache and runs there (default: a "
                                                        "temporary folder, removed at the end)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.workdir:
        print(json.dumps(run(args), indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="vopstore-bench-") as work:
        args.workdir = work
        print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
