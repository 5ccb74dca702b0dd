"""What the ``train`` and ``eval`` commands do, as library calls (the CLI only parses arguments).

* :func:`train_task` - read the data, train (resumably, under ``torchrun`` if
  launched by it), evaluate, register a new version; returns the new ref.
* :func:`eval_version` - evaluate a stored version on a dataset's test split.
* :func:`eval_zero_shot` - the backbone alone, through the same evaluation path.

The modules that import torch (recipe, backbone, prompts, evaluation) or SQLAlchemy (the
store) are imported inside the functions, after the cheap checks in front of them (task
name, dataset folder), so a mistyped command is answered before seconds of imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vopstore.core import default_device, short_digest
from vopstore.errors import FileMissingError
from vopstore.home import home_dir
from vopstore.refs import validate_name
from vopstore.trainer.config import TrainConfig, config_from_dict, parse_override
from vopstore.trainer.data import check_videos, read_split
from vopstore.trainer.data.sample import skip_report
from vopstore.trainer.selection import carve_validation, make_selector


@dataclass
class TrainResult:
    """What one ``train_task`` call produced (identical on every rank)."""

    ref: str | None
    digest: str | None
    metrics: dict | None
    steps: int
    seconds: float
    clips_per_s: float
    run_dir: str
    resumed_from: int = 0  # the step a killed run resumed at (0: a fresh run)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def read_splits(cfg: TrainConfig, data: str | Path, train: bool = True):
    """(train samples or None, test samples) of the dataset at ``data``."""
    root = Path(data)
    if not root.is_dir():
        raise FileMissingError(f"dataset folder not found: {root}; pass --data with a dataset root")
    train_samples = read_split(cfg.data_format, root, cfg.train_split, cfg.on_error) if train else None
    # Decode-check the test videos up front: a clip swapped for its neighbour at load time
    # (fine for training) would pair captions with the wrong video in the metrics.
    test_samples = check_videos(read_split(cfg.data_format, root, cfg.test_split, cfg.on_error), cfg.on_error)
    if cfg.strict:
        for name, samples in ((cfg.train_split, train_samples), (cfg.test_split, test_samples)):
            if samples is not None:
                samples.require_complete(f"split {name!r} of {root}")
    return train_samples, test_samples


def data_record(train_samples, test_samples) -> dict:
    """What a version records about its data: the skips of each split and the evaluation frame rule."""
    from vopstore.trainer.data.frames import EVAL_SAMPLING  # torch, through vopstore.video

    return {"skipped": {"train": skip_report(train_samples), "test": skip_report(test_samples)},
            "eval_sampling": EVAL_SAMPLING}


def default_run_dir(task: str, cfg: TrainConfig, data: str | Path) -> Path:
    """``$VOPSTORE_HOME/runs/<task>-<hash of config + data path>``: rerunning the same command resumes."""
    key = short_digest({"config": cfg.to_dict(), "data": str(Path(data).resolve())})
    return home_dir() / "runs" / f"{task}-{key}"


def train_task(task: str, data: str | Path, cfg: TrainConfig, *, run_dir: str | Path | None = None,
               store: Any = None, backbone: Any = None, message: str | None = None, progress: bool = True,
               log: Callable[[str], None] = lambda s: None) -> TrainResult:
    """Train ``cfg.method`` on ``task``'s data, evaluate on the test split and register a version.

    Under ``torchrun`` every rank trains its share; rank 0 alone evaluates and
    writes the store, then every rank returns the same result.
    """
    from vopstore.trainer import recipe
    from vopstore.trainer.distributed import barrier, broadcast_object, init_distributed, shutdown

    validate_name(task, "task")  # fail before hours of training, not after
    dist = init_distributed()
    log = log if dist.is_main else (lambda text: None)
    try:
        train_samples, test_samples = read_splits(cfg, data)
        train_samples, selection = selection_split(cfg, train_samples, test_samples, log)
        run_dir = Path(run_dir) if run_dir else default_run_dir(task, cfg, data)
        log(f"training {cfg.method} on {len(train_samples)} pairs ({train_samples.summary()}); run dir {run_dir}")
        run = recipe.setup(cfg, train_samples, run_dir, backbone=backbone, dist=dist, selection=selection)
        resumed_from = run.step
        if resumed_from:
            log(f"resuming at step {resumed_from}/{run.total_steps}")
        summary = recipe.train(run, progress=progress, on_log=None if progress else log)
        barrier(dist)
        result = None
        if dist.is_main:
            if run.selection is not None:
                run.selection.load_best(run.method)
                log(f"selected the prompts of step {run.selection.best_step} ({cfg.select_metric} "
                    f"{run.selection.best_score:.1f}, mean of the last {cfg.select_window} on {run.selection.split})")
            log(f"evaluating on {len(test_samples)} test pairs ({test_samples.summary()})")
            metrics = recipe.evaluate(run, test_samples, progress=progress)
            info = recipe.save(run, task, metrics, store=store, message=message,
                               data_record=data_record(train_samples, test_samples))
            result = TrainResult(info.ref, info.digest, metrics, run.step, summary["seconds"],
                                 summary["clips_per_s"], str(run_dir), resumed_from)
        return broadcast_object(result, dist)
    finally:
        shutdown(dist)


def selection_split(cfg: TrainConfig, train_samples: list, test_samples: list,
                    log: Callable[[str], None] = lambda s: None):
    """(training samples, selector or None): ``select=best`` picks on held-out training videos or the test split."""
    if cfg.select != "best":
        return train_samples, None
    if cfg.val_fraction:
        train_samples, held_out = carve_validation(train_samples, cfg.val_fraction, cfg.seed)
        log(f"selecting on {len(held_out)} pairs of {cfg.val_fraction:g} of the training videos, held out")
        return train_samples, make_selector(cfg, check_videos(held_out, cfg.on_error), "val")
    log("selecting on the TEST split (X-Pool's protocol, which the paper's numbers likely follow): its test "
        "numbers are optimistic; set val_fraction=0.1 to select on held-out training videos instead")
    return train_samples, make_selector(cfg, test_samples, "test")


def _autocast(cfg: TrainConfig, backbone: Any):
    from vopstore.trainer.recipe import autocast_for

    return autocast_for(cfg, backbone.device)


def eval_version(ref: str, data: str | Path, sets: tuple[str, ...] = (), store: Any = None,
                 device: str | None = None, progress: bool = False) -> dict:
    """Metrics of a stored version on the test split, with the frames/format it was trained with.

    ``sets`` (``key=value``) override the stored training config (e.g. ``test_split=val``).
    """
    from vopstore.backbone import load_backbone
    from vopstore.prompts import load_prompt_set
    from vopstore.trainer.evaluate import evaluate

    if store is None:
        from vopstore.store import open_store

        store = open_store()
    info = store.resolve(ref)
    cfg = config_from_dict({**(info.training_config or {}), **dict(parse_override(s) for s in sets)})
    backbone = load_backbone(info.backbone_name, device=device or default_device())
    method = load_prompt_set(store.fetch(info), backbone)
    _, test_samples = read_splits(cfg, data, train=False)
    return {"ref": info.ref, "metrics": evaluate(backbone, method, test_samples, cfg, _autocast(cfg, backbone),
                                                  progress)}


def eval_zero_shot(data: str | Path, cfg: TrainConfig, backbone: Any = None, device: str | None = None,
                   progress: bool = False) -> dict:
    """Metrics of the backbone alone (mean of frame embeddings) on the test split."""
    from vopstore.backbone import load_backbone
    from vopstore.trainer.evaluate import evaluate

    backbone = backbone or load_backbone(cfg.backbone, device=device or default_device())
    _, test_samples = read_splits(cfg, data, train=False)
    return evaluate(backbone, None, test_samples, cfg, _autocast(cfg, backbone), progress)
