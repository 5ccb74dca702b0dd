"""Train one method in a fresh process and measure what its training cost: seconds and peak memory.

Why a fresh process per method: on CPU the only exact peak-memory counter is the
kernel's ``ru_maxrss``, and it is process-wide and never goes down, so in one
process the second method's peak hides under the first one's. ``tracemalloc``
sees only Python's allocator, not torch's tensors, so it cannot stand in. A
child process started with ``spawn`` (``fork`` is unsafe once torch has started
its threads or CUDA) begins with a clean counter; its peak minus its resident
size after the imports is what the training allocated: backbone weights, data,
activations, gradients and optimiser state, the same things CUDA's
``max_memory_allocated`` counts on a GPU (there the child's own CUDA counter is
used). The measured call is the whole ``train_task``, so it also covers the
evaluation of the trained model; evaluation runs without gradients at a similar
batch size, so training sets the peak in practice.

A child that dies (killed for memory, a crash in native code) becomes one clear
error; the method's run folder keeps its last checkpoint, so rerunning resumes it.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from vopstore.errors import VopstoreError
from vopstore.trainer.config import TrainConfig


@dataclass(frozen=True)
class MeasuredTraining:
    """What one isolated training produced and cost."""

    ref: str
    digest: str
    steps: int
    seconds: float  # wall seconds of the training loop (the recipe's own count, evaluation excluded)
    peak_memory: int  # bytes; see memory_kind
    memory_kind: str  # "cuda": max_memory_allocated; "rss": peak resident size above the post-import baseline
    resumed_from: int = 0  # >0: an interrupted run resumed at this step, so seconds and memory cover only the rest


def train_isolated(task: str, data: str | Path, cfg: TrainConfig, *, store_url: str | None = None,
                   message: str | None = None, progress: bool = False, verbose: bool = True) -> MeasuredTraining:
    """Run :func:`vopstore.trainer.workflow.train_task` for ``cfg`` in a fresh process and measure it.

    Errors raised by the training (a bad config, unreadable data) are re-raised here as they are.

    Raises:
        VopstoreError: the training process died without raising (e.g. killed for memory).
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        job = pool.submit(_train_and_measure, task, str(data), cfg, store_url, message, progress, verbose)
        try:
            return job.result()
        except BrokenProcessPool:
            raise VopstoreError(f"training {cfg.method} on {task}: the training process died (out of memory?); "
                                "rerun the same command to resume from its last checkpoint") from None


def _train_and_measure(task: str, data: str, cfg: TrainConfig, store_url: str | None, message: str | None,
                       progress: bool, verbose: bool) -> MeasuredTraining:
    """The child's side: imports first (not counted), then the measured training."""
    import torch
    from transformers import CLIPModel  # noqa: F401 - library code belongs to the baseline, not to the training

    import vopstore.trainer.data  # noqa: F401 - PyAV and the readers, likewise
    import vopstore.trainer.recipe  # noqa: F401
    from vopstore.store import open_store
    from vopstore.trainer.workflow import train_task

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    baseline = current_rss()
    log = (lambda text: print(text, file=sys.stderr, flush=True)) if verbose else (lambda text: None)
    result = train_task(task, data, cfg, store=open_store(store_url), message=message, progress=progress, log=log)
    if cuda:
        peak, kind = torch.cuda.max_memory_allocated(), "cuda"
    else:
        peak, kind = max(peak_rss() - baseline, 0), "rss"
    return MeasuredTraining(result.ref, result.digest, result.steps, result.seconds, int(peak), kind,
                            result.resumed_from)


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def current_rss() -> int:
    """Resident set size of this process now, in bytes (the peak so far where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss()  # a high baseline: the training's delta is then under-, never over-stated
