"""The VoP training recipe: ``setup`` -> ``train`` -> ``evaluate`` -> ``save``.

Plain functions over one small :class:`Run` record; the configuration lives in
:class:`~vopstore.trainer.config.TrainConfig`. The recipe follows the paper and,
where the paper is silent (warm-up, clipping, seed), the X-Pool code that VoP's
code descends from: symmetric InfoNCE at the frozen backbone's temperature, AdamW
(wd 0.2) over the prompt parameters only, linear warm-up then cosine decay per
step, grad-clip 1.0, gradient accumulation, bf16 autocast on CUDA, fixed seeds.
Under ``torchrun`` every rank feeds its share of the global batch and the loss is
computed on the gathered embeddings.

A run directory holds ``train-state.pt`` (prompt params, optimiser, scheduler,
step; written atomically every ``checkpoint_every`` steps by rank 0),
``rng-rank<r>.pt`` (each rank's RNG state) and ``log.jsonl``. Calling
:func:`setup` on a directory with a state resumes from it; the data order is a
function of (seed, epoch), so a resumed run finishes with the same parameters
as an uninterrupted one.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vopstore.backbone import load_backbone
from vopstore.core import atomic_write
from vopstore.errors import ConfigError
from vopstore.progress import ProgressBar
from vopstore.prompts import build_method, encode_text, encode_video
from vopstore.prompts.configs import Dims, complete_settings
from vopstore.trainer import batches
from vopstore.trainer.config import TrainConfig, config_from_dict
from vopstore.trainer.distributed import DistInfo, barrier, default_device, gather_with_grad
from vopstore.trainer.evaluate import evaluate as evaluate_method
from vopstore.trainer.loss import contrastive_loss
from vopstore.trainer.selection import Selector, last_step_record, make_selector

STATE_FILE = "train-state.pt"
LOG_FILE = "log.jsonl"
# VoP^C's context generator (BiLSTM + FC, matched by name) trains at ``aux_lr``: the paper gives no rate for it,
# and these are ordinary weight matrices, for which the prompt tokens' rate is too high a start.
AUX_MODULES = ("cmm", "fc", "lstm")


class DualEncoder(nn.Module):
    """The prompt method as a module DDP can wrap: forward = both towers.

    The frozen backbone is held outside the module tree, so DDP neither
    broadcasts nor tracks its weights; only the prompt parameters are synced.
    """

    def __init__(self, method: nn.Module, backbone: Any):
        super().__init__()
        self.method = method
        self._backbone = (backbone,)  # a tuple hides it from nn.Module registration

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        backbone = self._backbone[0]
        return encode_text(backbone, input_ids, self.method), encode_video(backbone, pixel_values, self.method)


@dataclass
class Run:
    """Everything ``train``/``evaluate``/``save`` share; built by :func:`setup`."""

    cfg: TrainConfig
    backbone: Any
    method: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    samples: list
    dataset: Any
    dist: DistInfo
    run_dir: Path
    micro: int
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    history: list = field(default_factory=list)
    selection: Selector | None = None  # select="best": evaluations and the best prompts so far

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps


# --- setup -------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_for(cfg: TrainConfig, device: torch.device | str) -> Callable[[], Any]:
    """A context factory: bf16 autocast on CUDA (``precision=auto|bf16``), plain fp32 elsewhere."""
    kind = torch.device(device).type
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and kind == "cuda")
    if not use_bf16:
        return nullcontext
    return lambda: torch.autocast(kind, dtype=torch.bfloat16)


def build_optimizer(method: nn.Module, cfg: TrainConfig, total_steps: int):
    """AdamW over the trainable prompt parameters only, cosine schedule with linear warm-up."""
    from transformers import get_cosine_schedule_with_warmup

    main, aux = [], []
    for name, param in method.named_parameters():
        if param.requires_grad:
            (aux if set(name.lower().split(".")) & set(AUX_MODULES) else main).append(param)
    if not main and not aux:
        raise ConfigError(f"method {cfg.method!r} has no trainable parameters; nothing to train")
    groups = [{"params": main, "lr": cfg.lr}] + ([{"params": aux, "lr": cfg.aux_lr}] if aux else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    warmup = int(round(cfg.warmup_ratio * total_steps))
    return optimizer, get_cosine_schedule_with_warmup(optimizer, warmup, max(1, total_steps))


def setup(cfg: TrainConfig, train_samples: list, run_dir: Path, backbone: Any = None,
          dist: DistInfo | None = None, device: str | None = None, selection: Selector | None = None) -> Run:
    """Build (or resume) a run: backbone, prompt method, DDP wrapper, optimiser, data order.

    Args:
        cfg: the validated training config.
        train_samples: the training split (``read_split`` output).
        run_dir: where the resumable state and the JSONL log live; an existing
            state there with the same config is resumed.
        backbone: an already loaded backbone (else ``cfg.backbone`` is loaded).
        dist: this process's place in a ``torchrun`` job (single process if None).
        device: where to train (default: this rank's GPU, else CPU).
        selection: with ``select="best"``, the :class:`Selector` over the selection split.
    """
    dist = dist or DistInfo()
    device = device or default_device(dist)
    seed_everything(cfg.seed + dist.rank)
    if backbone is None:
        backbone = load_backbone(cfg.backbone, device=device)
    method = build_method_for(cfg, backbone).to(backbone.device)
    method.train()
    model = _wrap(DualEncoder(method, backbone), dist, backbone.device)
    micro = cfg.micro_batch(dist.world_size)
    per_epoch = batches.steps_per_epoch(len(train_samples), micro, cfg.grad_accum, dist.world_size)
    if per_epoch < 1:
        raise ConfigError(f"{len(train_samples)} training samples do not fill one global batch of "
                          f"{cfg.batch_size}; lower batch_size or add data")
    total = per_epoch * cfg.epochs if not cfg.max_steps else min(cfg.max_steps, per_epoch * cfg.epochs)
    optimizer, scheduler = build_optimizer(method, cfg, total)
    dataset = batches.make_dataset(train_samples, cfg, backbone, train=True)
    run = Run(cfg, backbone, method, model, optimizer, scheduler, list(train_samples), dataset, dist,
              Path(run_dir), micro, per_epoch, total)
    run.selection = selection if selection is not None else make_selector(cfg, None)
    _maybe_resume(run)
    return run


def build_method_for(cfg: TrainConfig, backbone: Any) -> nn.Module:
    """``cfg.method``, freshly initialised from ``cfg.seed`` on ``backbone``.

    ``cfg.method_config`` is completed by the method's own config from the backbone's sizes
    and ``cfg.num_frames`` (:func:`vopstore.prompts.configs.complete_settings`).
    """
    dims = Dims.from_clip_config(backbone.model.config)
    settings = complete_settings(cfg.method, dims, cfg.num_frames, cfg.method_config)
    return build_method(cfg.method, backbone, seed=cfg.seed, **settings)


def _wrap(module: DualEncoder, dist: DistInfo, device: torch.device) -> nn.Module:
    if not dist.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


# --- resumable state ---------------------------------------------------------------------------------------------


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` as one rename, fsynced: a kill mid-write leaves the last whole state, never a torn one."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(run: Run) -> None:
    """Write the resumable state (rank 0: shared state; every rank: its RNG), atomically."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_save({"step": run.step, "rng": _rng_state()}, run.run_dir / f"rng-rank{run.dist.rank}.pt")
    if run.dist.is_main:
        _atomic_save({"step": run.step, "config": run.cfg.to_dict(), "method": run.method.state_dict(),
                      "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                      "selection": run.selection.state_dict() if run.selection else None},
                     run.run_dir / STATE_FILE)
    barrier(run.dist)


def _maybe_resume(run: Run) -> None:
    path = run.run_dir / STATE_FILE
    if not path.is_file():
        return
    state = torch.load(path, map_location=run.backbone.device, weights_only=False)
    if config_from_dict(state["config"]).to_dict() != run.cfg.to_dict():
        raise ConfigError(f"{run.run_dir} holds a run with another training config; "
                          "pass another run directory or start fresh")
    run.method.load_state_dict(state["method"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.step = int(state["step"])
    if run.selection is not None and state.get("selection"):
        run.selection.load_state_dict(state["selection"])
    rng_path = run.run_dir / f"rng-rank{run.dist.rank}.pt"
    if rng_path.is_file():
        rng = torch.load(rng_path, weights_only=False)
        if rng["step"] == run.step:
            _set_rng_state(rng["rng"])


# --- train -------------------------------------------------------------------------------------------------------


def train(run: Run, progress: bool = True, stop_after: int | None = None,
          on_log: Callable[[str], None] | None = None) -> dict:
    """Train from ``run.step`` to ``run.total_steps`` (or for ``stop_after`` more steps).

    ``on_log`` gets a one-line summary every ``log_every`` steps (for logs that are not a terminal).

    Returns:
        ``{"steps", "final_loss", "seconds", "clips_per_s"}`` of this call.
    """
    cfg, start_step, start = run.cfg, run.step, time.perf_counter()
    end = run.total_steps if stop_after is None else min(run.total_steps, run.step + stop_after)
    autocast = autocast_for(cfg, run.backbone.device)
    loss = float("nan")
    feed = batches.train_batches(run.dataset, _step_sampler(run, end), cfg.num_workers,
                                 pin_memory=torch.device(run.backbone.device).type == "cuda")
    bar = ProgressBar("training", run.total_steps, enabled=progress and run.dist.is_main, completed=run.step)
    with bar, closing(feed):
        while run.step < end:
            lr = run.scheduler.get_last_lr()[0]  # the lr this step uses (the scheduler steps after it)
            loss = _optimizer_step(run, autocast, next(feed))
            run.step += 1
            rate = (run.step - start_step) * cfg.batch_size / (time.perf_counter() - start)
            bar.update(run.step, info=f"loss {loss:.4f}  lr {lr:.2e}  {rate:.1f} clips/s")
            if run.step % cfg.log_every == 0 or run.step == end:
                _log(run, {"step": run.step, "loss": loss, "lr": lr, "clips_per_s": rate})
                if on_log and run.dist.is_main:
                    on_log(f"  step {run.step}/{run.total_steps}  loss {loss:.4f}  lr {lr:.2e}  {rate:.1f} clips/s")
            _maybe_select(run)
            if run.step % cfg.checkpoint_every == 0 or run.step == run.total_steps:
                save_state(run)
    seconds = time.perf_counter() - start
    done = run.step - start_step
    return {"steps": done, "final_loss": loss, "seconds": seconds,
            "clips_per_s": done * cfg.batch_size / seconds if seconds > 0 else 0.0}


def _step_sampler(run: Run, end: int) -> batches.StepSampler:
    """This rank's micro-batches from ``run.step`` (where a resumed run stopped) to ``end``."""
    return batches.StepSampler(len(run.samples), run.micro, run.cfg.grad_accum, run.steps_per_epoch,
                               run.cfg.seed, run.dist.rank, run.dist.world_size, start=run.step, end=end)


def _optimizer_step(run: Run, autocast, groups: list[dict]) -> float:
    """One optimiser step over this rank's micro-batches ``groups`` (gradient accumulation)."""
    cfg, total = run.cfg, 0.0
    logit_scale = run.backbone.model.logit_scale.detach()
    n_prompts = getattr(run.method, "text_tokens", 0)
    run.optimizer.zero_grad(set_to_none=True)
    for k, batch in enumerate(groups):
        ids = run.backbone.tokenize(batch["captions"], n_prompts)
        frames = batch["pixel_values"].to(run.backbone.device, run.backbone.dtype, non_blocking=True)
        sync = k == len(groups) - 1 or not run.dist.enabled
        with (nullcontext() if sync else run.model.no_sync()), autocast():
            text, video = run.model(ids, frames)
            loss = contrastive_loss(gather_with_grad(text, run.dist), gather_with_grad(video, run.dist),
                                    logit_scale)
            (loss / cfg.grad_accum).backward()
        total += float(loss.detach()) / cfg.grad_accum
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in run.method.parameters() if p.requires_grad], cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    return total


def _log(run: Run, record: dict) -> None:
    run.history.append(record)
    if not run.dist.is_main:
        return
    run.run_dir.mkdir(parents=True, exist_ok=True)
    with open(run.run_dir / LOG_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": time.time(), **record}) + "\n")


# --- evaluate / save ---------------------------------------------------------------------------------------------


def evaluate(run: Run, test_samples: list, progress: bool = False) -> dict:
    """Retrieval metrics of the run's prompts on a test split (call on rank 0)."""
    return evaluate_method(run.backbone, run.method, test_samples, run.cfg,
                           autocast_for(run.cfg, run.backbone.device), progress)


def _maybe_select(run: Run) -> None:
    """With ``select="best"``, evaluate at the selection points (rank 0) and keep the best prompts.

    The RNG state is put back afterwards, so selecting never changes what training does.
    """
    if run.selection is None or not run.selection.due(run.step, run.steps_per_epoch, run.total_steps):
        return
    if run.dist.is_main:
        rng = _rng_state()
        entry = run.selection.record(run.step, evaluate(run, run.selection.samples), run.method)
        _set_rng_state(rng)
        _log(run, {"step": run.step, "select": entry["score"], "window": entry["window"], "best": entry["best"]})


def save(run: Run, task: str, metrics: dict | None = None, store: Any = None, message: str | None = None,
         data_record: dict | None = None):
    """Write the prompt set to the run dir and register it as a new version of ``task`` (rank 0 only).

    ``data_record`` (what the data loading skipped, the evaluation frame rule) joins the training config.

    Returns:
        The store's ``VersionInfo`` of the new version.
    """
    if not run.dist.is_main:
        raise ConfigError("only rank 0 writes the store")
    if store is None:
        from vopstore.store import open_store

        store = open_store()
    path = run.run_dir / "prompts.safetensors"
    run.method.save(path, run.backbone)
    config = {**run.cfg.to_dict(), "world_size": run.dist.world_size, "steps": run.step,
              "backbone_fingerprint": run.backbone.fingerprint,
              "selection": run.selection.summary() if run.selection else last_step_record(run.step),
              **(data_record or {})}
    return store.add(task, path, metrics=metrics, message=message, training_config=config)
