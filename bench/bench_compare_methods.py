"""Every method side by side, one table, one run: train step, peak memory, stored bytes, 16-task runtime throughput.

One command; ratios are measured in the same run:

    .venv/bin/python bench/bench_compare_methods.py            # small CLIP, CPU, 2 threads (~4 min)
    .venv/bin/python bench/bench_compare_methods.py --vitb32   # the ViT-B/32 architecture (slow; 16 full
                                                               # versions are ~10 GB on disk and in memory)

One row per method, the VoP family (vop, vop-p, vop-c, vop-f, vop-f+p, vop-f+c) and the
baselines (full, bias, proj, partial, adapter-attn, adapter-ffn), all on one backbone:

* trainable params, and one training step (forward of the texts and videos, a contrastive
  loss, backward, AdamW step): median ms and peak memory, each against ``full``. Each method
  runs in its own subprocess (bench_methods.step_row) so that its peak memory is its own;
  ``full`` is full fine-tuning as ``vopstore train --method full`` runs it;
* stored bytes: 16 versions are saved in the checkpoint format and added to a temporary
  local store; the figure is the size of the blob file the store holds for one of them;
* runtime: those 16 versions loaded in one ``vopstore.Retriever``; a 64-text batch (row i
  uses version i mod 16) and a 16-video batch (video i uses version i) encoded with
  ``tasks=rows``: texts/s and videos/s, and the ratio to the same batch as plain CLIP rows
  (no task), timed in interleaved rounds with the method's so that the load of a shared
  machine lands on both.

Weights are random (no download; time, memory and bytes do not depend on their values):
the backbone and every version (each moved off its initialisation so that versions differ).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_methods
from bench_runtime import interleaved_medians, texts

VOP = ["vop", "vop-p", "vop-c", "vop-f", "vop-f+p", "vop-f+c"]
BASELINES = ["full", "bias", "proj", "partial", "adapter-attn", "adapter-ffn"]
VERSIONS = 16
TEXT_ROWS = 64
REFERENCE = "full"


def publish(store, backbone, folder: Path, method: str, frames: int, count: int = VERSIONS) -> list[str]:
    """``count`` distinct versions of ``method`` added to ``store``; returns their task names."""
    import torch

    from vopstore.prompts import build_method

    made = build_method(method, backbone, seed=0, **bench_methods.method_settings(method, backbone, frames))
    generator = torch.Generator().manual_seed(0)
    # A fresh adapter or weight baseline computes exactly the backbone: every tensor moves. Version v is
    # initialisation + (1 + v / count) * noise: distinct versions for one noise draw (a draw per version
    # of a full fine-tune costs more than saving it).
    noise = [0.02 * torch.randn(p.shape, generator=generator).to(device=p.device, dtype=p.dtype)
             for p in made.parameters()]
    tasks = []
    for version in range(count):
        with torch.no_grad():
            for p, step in zip(made.parameters(), noise):
                p.add_(step if version == 0 else step / count)
        path = folder / f"{version}.safetensors"
        made.save(path, backbone)
        task = f"local/{method.replace('+', '_')}-{version}"
        store.add(task, path)
        path.unlink()
        tasks.append(task)
    return tasks


def stored_bytes(store, task: str) -> int:
    """Size of the blob file the store holds for ``task``'s latest version (checked against its record)."""
    info = store.resolve(task)
    with store.open_blob(info) as blob:  # the local store's own blob file, hashed in place
        size = Path(blob.path).stat().st_size
    if size != info.size:
        raise RuntimeError(f"{task}: the blob file has {size} bytes but the store records {info.size}")
    return size


def video_rounds(rounds: int) -> int:
    """Rounds of the video batch: about half the text batch's (a video call costs ~10 text calls)."""
    return max(1, (rounds + 1) // 2)


def throughput(backbone, store, tasks: list[str], frames: int, rounds: int) -> dict:
    """Texts/s and videos/s of the mixed batches and of the same batches as plain CLIP rows.

    Raises:
        LoadFailure: the Retriever could not load the versions.
    """
    import torch

    from vopstore import Retriever

    retriever = Retriever(backbone, store=store)
    try:
        retriever.load_many(tasks)
    except Exception as error:  # noqa: BLE001 - any failure becomes the table's n/a cell
        raise LoadFailure(error) from error
    batch = texts(TEXT_ROWS, 20)
    text_rows = [tasks[i % len(tasks)] for i in range(TEXT_ROWS)]
    size = backbone.image_size
    pixels = torch.randn(len(tasks), frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    pixels = pixels.to(backbone.device, backbone.dtype)
    sync = torch.cuda.synchronize if backbone.device.type == "cuda" else (lambda: None)  # time the work, not the launch

    def timed(encode, *args, **kwargs):
        return lambda: (encode(*args, **kwargs), sync())

    text_s = interleaved_medians({"plain": timed(retriever.encode_text, batch),
                                  "mixed": timed(retriever.encode_text, batch, tasks=text_rows)}, rounds)
    video_s = interleaved_medians({"plain": timed(retriever.encode_video, pixels),
                                   "mixed": timed(retriever.encode_video, pixels, tasks=tasks)}, video_rounds(rounds))
    return {"texts": TEXT_ROWS / text_s["mixed"], "texts_plain": TEXT_ROWS / text_s["plain"],
            "videos": len(tasks) / video_s["mixed"], "videos_plain": len(tasks) / video_s["plain"]}


class LoadFailure(Exception):
    """The runtime refused a method's versions; ``str()`` is the cause's first line."""

    def __init__(self, cause: BaseException) -> None:
        lines = str(cause).strip().splitlines() or [type(cause).__name__]
        super().__init__(f"{type(cause).__name__}: {lines[0]}")


def measure(args: argparse.Namespace, methods: list[str], work: Path) -> tuple[dict, str]:
    """{method: row} for every method, and lines describing the set-up; ``work`` holds the backbone and store."""
    import torch

    from vopstore.backbone import load_backbone, save_random_backbone

    setup = "vit-b32" if args.vitb32 else "small"
    videos, frames, repeats = bench_methods.SETUPS[setup]
    os.environ["VOPSTORE_HOME"] = str(work / "home")  # never the user's store
    os.environ["BENCH_THREADS"] = str(args.threads)  # the step subprocesses' torch threads
    folder = str(save_random_backbone(work / "clip", bench_methods.clip_config(setup), seed=0))
    rows = {name: {"method": name} for name in methods}
    for name in methods:
        started = time.perf_counter()
        try:
            rows[name].update(bench_methods.step_row(folder, setup, name, args.device, os.environ["VOPSTORE_HOME"]))
        except RuntimeError as error:
            rows[name]["step_error"] = str(error)
        print(f"  train step {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    from vopstore.store import open_store

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    backbone = load_backbone(folder, device=args.device)
    store = open_store()
    for name in methods:
        started = time.perf_counter()
        try:
            tasks = publish(store, backbone, work, name, frames)
            rows[name]["stored_bytes"] = stored_bytes(store, tasks[0])
            rows[name].update(throughput(backbone, store, tasks, frames, args.rounds))
        except LoadFailure as error:
            rows[name]["runtime_error"] = f"runtime cannot load {name}: {error}"
        except Exception as error:  # noqa: BLE001 - one method's failure must not hide the others' rows
            first = (str(error).strip().splitlines() or [""])[0]
            rows[name].setdefault("runtime_error", f"{name} failed: {type(error).__name__}: {first}")
        gc.collect()  # 16 full versions are 16 models: free them before the next method
        print(f"  store + runtime {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    params = sum(p.numel() for p in backbone.model.parameters())
    vision, text = backbone.model.config.vision_config, backbone.model.config.text_config
    described = (f"{setup} CLIP ({params / 1e6:.1f} M params; text {text.hidden_size} wide x {text.num_hidden_layers}"
                 f" layers, vision {vision.hidden_size} wide x {vision.num_hidden_layers} layers, "
                 f"{vision.image_size} px / {vision.patch_size} px patches), random weights, {args.device}, "
                 f"{args.threads} threads\n"
                 f"train step: {videos} videos x {frames} frames + {videos} texts, fwd+bwd+AdamW, median of {repeats} "
                 f"steps after a warm-up, each method in its own subprocess (peak = memory growth over the loaded "
                 f"backbone and inputs)\n"
                 f"runtime: {VERSIONS} versions loaded per method; {TEXT_ROWS} texts (row i -> version i mod "
                 f"{VERSIONS}) and {VERSIONS} videos x {frames} frames (video i -> version i), medians of "
                 f"{args.rounds} (texts) / {video_rounds(args.rounds)} (videos) rounds interleaved with plain CLIP "
                 f"rows (no task) on the same batch")
    return rows, described


def _ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}" if value is not None and reference else "n/a"


def report(rows: dict, described: str) -> None:
    print(described)
    full = rows.get(REFERENCE, {})
    head = (f"{'method':13} {'trainable':>12} {'step ms':>9} {'x full':>7} {'peak MB':>9} {'x full':>7} "
            f"{'stored bytes':>14} {'texts/s':>9} {'x plain':>8} {'videos/s':>9} {'x plain':>8}")
    print(head)
    print("-" * len(head))
    for name, row in rows.items():
        if "step_error" in row:
            train = f"{'n/a':>12} {'n/a':>9} {'':7} {'n/a':>9} {'':7}"
        else:
            ms = row["median_s"] * 1000
            train = (f"{row['trainable']:>12,} {ms:>9.1f} {_ratio(row['median_s'], full.get('median_s')):>7} "
                     f"{row['peak_mb']:>9.1f} {_ratio(row['peak_mb'], full.get('peak_mb')):>7}")
        stored = f"{row['stored_bytes']:>14,}" if "stored_bytes" in row else f"{'n/a':>14}"
        if "texts" in row:
            runtime = (f"{row['texts']:>9.1f} {_ratio(row['texts'], row['texts_plain']):>8} "
                       f"{row['videos']:>9.2f} {_ratio(row['videos'], row['videos_plain']):>8}")
        else:
            runtime = f"n/a ({row.get('runtime_error', 'not measured')})"
        print(f"{name:13} {train} {stored} {runtime}")
    plain = [row for row in rows.values() if "texts_plain" in row]
    if plain:
        texts_plain = statistics.median(row["texts_plain"] for row in plain)
        videos_plain = statistics.median(row["videos_plain"] for row in plain)
        print(f"{'plain CLIP':13} {'':12} {'':9} {'':7} {'':9} {'':7} {'':14} {texts_plain:>9.1f} {'1.00':>8} "
              f"{videos_plain:>9.2f} {'1.00':>8}   (no task; median over the methods' interleaved rounds)")
    for name, row in rows.items():
        if "step_error" in row:
            print(f"{name}: {row['step_error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vitb32", "--vit-b32", dest="vitb32", action="store_true",
                        help="the ViT-B/32 architecture instead of the small CLIP")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the text batch (the video batch gets about half)")
    parser.add_argument("--methods", default=",".join(VOP + BASELINES),
                        help="comma-separated; the default is every method (ratios are to 'full': keep it in)")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        parser.error("--methods is empty; name at least one method, e.g. --methods full,vop")
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be at least 1")
    from vopstore.errors import UnknownMethodError
    from vopstore.prompts.configs import config_class

    for name in methods:
        try:
            config_class(name)
        except UnknownMethodError as error:
            parser.error(str(error).splitlines()[0])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vop-bench-compare-") as work:  # 16 full versions: removed after
        rows, described = measure(args, methods, Path(work))
    report(rows, described)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(bench_methods.ROOT))
    main()
