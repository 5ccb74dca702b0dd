"""Baselines in the Retriever: a 16-task batch of prompt sets and baselines, and what each loaded task costs.

One command, prints medians and ratios measured in the same run:

    .venv/bin/python bench/bench_runtime_baselines.py              # small CLIP (256/512 wide, 4 layers), CPU
    .venv/bin/python bench/bench_runtime_baselines.py --vit-b32    # the ViT-B/32 architecture, random init

16 tasks are loaded from a local store: 8 ``vop`` prompt sets and 8 baselines (2 each of
bias, proj, adapter-attn, adapter-ffn). A 64-text batch (4 rows per task) and a 16-video
batch (one video of ``--frames`` frames per task) are encoded

* mixed: one ``encode_*(…, tasks=rows)`` call (one forward for the prompt rows' groups, one
  for every baseline row; see vopstore.runtime.baselines);
* per task: 16 calls, one forward per task (how a server holding one model per task serves it);
* plain: the same batch without any task (the backbone alone, 1.0 reference).

Then a partial and a full fine-tune are loaded too (each its own model) and the bytes every
loaded task holds on the device are printed per method: its tensors, its precomputed keys
and values, and their sum (what ``max_bytes`` counts).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench_baseline_rows import load, median_s

ROOT = Path(__file__).resolve().parents[1]
PROMPT_TASKS = 8
BASELINE_METHODS = ("bias", "proj", "adapter-attn", "adapter-ffn")
ROWS_PER_TASK = 4


def publish(store, backbone, folder: Path, task: str, method: str, seed: int) -> str:
    """A seeded version of ``method`` with every tensor moved, added to ``store`` as ``task``."""
    import torch

    from vopstore.prompts import build_method

    made = build_method(method, backbone, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in made.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator).to(p.dtype))
    path = folder / f"{seed}.safetensors"
    made.save(path, backbone)
    info = store.add(task, path)
    path.unlink()
    return info.ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vit-b32", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=2, help="frames per video (default 2: the run stays ~2 min)")
    args = parser.parse_args()
    os.environ["VOPSTORE_HOME"] = tempfile.mkdtemp(prefix="vopstore-bench-")  # never the user's store
    sys.path.insert(0, str(ROOT))
    import torch

    from vopstore import Retriever
    from vopstore.store import open_store

    torch.set_num_threads(2)
    backbone = load(args.vit_b32)
    store, folder = open_store(), Path(tempfile.mkdtemp())
    methods = ["vop"] * PROMPT_TASKS + [m for m in BASELINE_METHODS for _ in range(2)]
    tasks = [f"local/{method}-{i}" for i, method in enumerate(methods)]
    for seed, (task, method) in enumerate(zip(tasks, methods)):
        publish(store, backbone, folder, task, method, seed)
    r = Retriever(backbone, store=store)
    r.load_many(tasks)

    text_rows = [task for task in tasks for _ in range(ROWS_PER_TASK)]
    texts = [f"a person number {i} opens a red door and walks into the kitchen" for i in range(len(text_rows))]
    pix = torch.randn(len(tasks), args.frames, 3, backbone.image_size, backbone.image_size)
    print(f"{len(tasks)} tasks ({PROMPT_TASKS} vop + 2 each of {', '.join(BASELINE_METHODS)}); "
          f"{len(texts)} texts, {len(tasks)} videos of {args.frames} frames; medians of {args.repeats}")
    print(f"{'batch':6} {'plain s':>9} {'mixed s':>9} {'per-task s':>11} {'mixed/plain':>12} {'per-task/mixed':>15}")
    for kind, batch, rows in (("text", texts, text_rows), ("video", pix, tasks)):
        encode = r.encode_text if kind == "text" else r.encode_video

        def per_task(encode=encode, batch=batch, rows=rows):
            for task in tasks:
                picked = [i for i, row in enumerate(rows) if row == task]
                encode([batch[i] for i in picked] if kind == "text" else batch[picked], task=task)

        t_plain = median_s(lambda: encode(batch), args.repeats)
        t_mixed = median_s(lambda: encode(batch, tasks=rows), args.repeats)
        t_each = median_s(per_task, args.repeats)
        print(f"{kind:6} {t_plain:9.4f} {t_mixed:9.4f} {t_each:11.4f} {t_mixed / t_plain:12.2f} "
              f"{t_each / t_mixed:15.2f}")

    for seed, method in enumerate(("partial", "full"), start=len(tasks)):
        r.load(publish(store, backbone, folder, f"local/{method}", method, seed))
    print(f"\nbytes one loaded task holds on the device ({backbone.name.split('/')[-1]}, {backbone.dtype}):")
    print(f"{'method':13} {'served as':10} {'tensors':>13} {'cached k/v':>11} {'max_bytes counts':>17}")
    memory, seen = r.memory, set()
    for task, info in r.loaded.items():
        if info.method in seen:
            continue
        seen.add(info.method)
        used = memory[task]
        served = "own model" if info.method in ("partial", "full") else "per row"
        print(f"{info.method:13} {served:10} {used['prompts']:13,} {used['cache']:11,} "
              f"{used['prompts'] + used['cache']:17,}")


if __name__ == "__main__":
    main()
