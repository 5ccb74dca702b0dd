"""``vopstore compare``: several methods trained on the same split and seed, beside the zero-shot backbone.

Each method is trained in a fresh process (:mod:`.measured`, for an honest peak
memory per method), evaluated, and registered as a version of the task with its
metrics. Parameter counts and stored bytes are read from the registered versions,
so any method the trainer accepts is compared the same way.

Resumable: a state file under ``$VOPSTORE_HOME/runs/compare-<task>-<key>/`` records
the zero-shot metrics and each finished method's version, keyed by the task, the
dataset folder and the whole training config except the method (preset, seed,
sizes, backbone). A rerun re-uses a recorded version while the store still holds
it with the same training config, and trains only the rest; a method killed
mid-training resumes from its own run folder (``default_run_dir``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from vopstore.backbone import load_backbone
from vopstore.core import atomic_write_bytes, default_device, short_digest
from vopstore.errors import ConfigError, NotFoundError
from vopstore.home import home_dir
from vopstore.prompts.configs import config_class
from vopstore.refs import validate_name
from vopstore.store import open_store
from vopstore.trainer.config import TrainConfig, build_config, config_from_dict, preset_for
from vopstore.trainer.demo import DemoConfig, ensure_task
from vopstore.trainer.measured import train_isolated
from vopstore.trainer.pretrain import ensure_demo_backbone
from vopstore.trainer.workflow import eval_zero_shot

STATE_FORMAT = 1
_DEMO_BACKBONE = "<demo backbone>"


@dataclass(frozen=True)
class MethodRow:
    """One method's line of the comparison."""

    method: str
    ref: str
    params: int
    share: float  # params / backbone parameters
    stored_bytes: int
    metrics: dict
    seconds: float
    peak_memory: int
    memory_kind: str
    resumed_from: int  # >0: the training resumed an interrupted run at this step; seconds and memory are partial
    reused: bool  # True: an earlier compare's version, not trained by this call

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Comparison:
    """The result of :func:`compare_methods`: the zero-shot baseline and one row per method."""

    task: str
    data: str
    backbone: str
    backbone_params: int
    zero_shot: dict
    rows: list[MethodRow] = field(default_factory=list)
    state_file: str = ""

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "rows"}
        return out | {"rows": [row.to_dict() for row in self.rows]}


def parse_methods(text: str | Iterable[str]) -> list[str]:
    """Method names from ``"vop,vop-f"`` (or a list), each one the trainer takes: a prompt method or a baseline.

    Raises:
        UnknownMethodError: a name the trainer does not know (the message lists the choices).
        ConfigError: no names, or one named twice.
    """
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = [part.strip() for part in parts if part.strip()]
    if not names:
        raise ConfigError("--methods is empty; give a comma-separated list, e.g. --methods vop,vop-f")
    for name in names:
        config_class(name)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"--methods names {', '.join(twice)} more than once; list each method once")
    return names


def synthetic_setup(quick: bool = False, sets: Iterable[str] = (),
                    log: Callable[[str], None] | None = print) -> tuple[Path, TrainConfig]:
    """The demo's synthetic task and small pretrained CLIP (both cached) and the demo's training config."""
    log = log or _silent
    demo = DemoConfig.quick() if quick else DemoConfig()
    # The overrides are checked before minutes of pretraining; the placeholder then becomes the real folder.
    cfg = build_config(None, demo.train_config("vop", _DEMO_BACKBONE).to_dict(), sets)
    if cfg.backbone == _DEMO_BACKBONE:
        cfg = replace(cfg, backbone=str(ensure_demo_backbone(home_dir(), demo.pretrain, log)))
    return ensure_task(home_dir() / "cache" / "demo-task" / demo.task_digest(), demo, log), cfg


def data_config(task: str, preset: str | None = None, backbone: str | None = None,
                sets: Iterable[str] = ()) -> TrainConfig:
    """The training config of a compare on a dataset folder: preset (or the task's own), backbone, overrides."""
    return build_config(preset_for(task, preset), {"backbone": backbone}, sets)


def compare_methods(task: str, data: str | Path, base: TrainConfig, methods: Iterable[str], *,
                    store_url: str | None = None, log: Callable[[str], None] | None = print,
                    progress: bool = False) -> Comparison:
    """Train (or re-use) every method in ``methods`` on ``data`` with ``base`` and compare them.

    Args:
        task: the task name every version is registered under.
        data: the dataset folder (its train and test splits per ``base``).
        base: the training config shared by every method (its ``method`` is replaced per method).
        methods: method names (checked against the registry before anything is read).
        store_url: the store to register in (None: the local store).
        log: receives progress lines for people (None: quiet, the training processes too).
        progress: show training progress bars.
    """
    verbose, log = log is not None, log or _silent
    names = parse_methods(methods)
    validate_name(task, "task")
    state_file = state_path(task, data, base)
    state = _load_state(state_file)
    if "zero_shot" not in state:
        log("zero-shot: evaluating the backbone alone")
        state.update(_zero_shot(data, base))
        _save_state(state_file, state)
    out = Comparison(task, str(data), base.backbone, state["backbone_params"], state["zero_shot"],
                     state_file=str(state_file))
    store = open_store(store_url)
    try:
        for name in names:
            cfg = replace(base, method=name)
            info = reusable_version(store, state["methods"].get(name), cfg)
            if info is not None:
                log(f"{name}: re-using {info.ref} (same data and training config)")
                out.rows.append(_row(info, state["methods"][name], state["backbone_params"], reused=True))
                continue
            state["methods"][name] = _train(task, data, cfg, store_url, progress, log if verbose else None)
            _save_state(state_file, state)  # after each method: a crash later keeps this one
            info = store.resolve(state["methods"][name]["ref"])
            out.rows.append(_row(info, state["methods"][name], state["backbone_params"], reused=False))
    finally:
        store.close()
    return out


def reusable_version(store: Any, entry: dict | None, cfg: TrainConfig):
    """The recorded version when the store still holds it, with the same bytes and training config; else None."""
    if not entry or entry.get("config_digest") != cfg.digest():
        return None
    try:
        info = store.resolve(entry["ref"])
    except NotFoundError:
        return None  # removed since the last compare: train it again
    stored = config_from_dict(info.training_config or {})
    if info.digest != entry.get("digest") or stored.digest() != cfg.digest():
        return None
    return info


def state_path(task: str, data: str | Path, base: TrainConfig) -> Path:
    """Where the compare of ``task`` on ``data`` with ``base`` (any method) keeps its state."""
    shared = {k: v for k, v in base.to_dict().items() if k != "method"}
    key = short_digest({"task": task, "data": str(Path(data).resolve()), "config": shared})
    return home_dir() / "runs" / f"compare-{task}-{key}" / "state.json"


def _load_state(path: Path) -> dict:
    fresh = {"format": STATE_FORMAT, "methods": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, or damaged: a lost state only costs retraining
        return fresh
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or not isinstance(state.get("methods"), dict):
        return fresh
    return state


def _save_state(path: Path, state: dict) -> None:
    atomic_write_bytes(path, json.dumps(state, indent=2, sort_keys=True).encode())


def _zero_shot(data: str | Path, base: TrainConfig) -> dict:
    """Zero-shot metrics and the backbone's parameter count (the denominator of every share)."""
    backbone = load_backbone(base.backbone, device=default_device())
    metrics = eval_zero_shot(data, base, backbone)
    params = sum(p.numel() for p in backbone.model.parameters())
    del backbone
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # leave the GPU to the training processes
    return {"zero_shot": metrics, "backbone_params": params}


def _train(task: str, data: str | Path, cfg: TrainConfig, store_url: str | None, progress: bool,
           log: Callable[[str], None] | None) -> dict:
    done = train_isolated(task, data, cfg, store_url=store_url, message=f"vopstore compare ({cfg.method})",
                          progress=progress, verbose=log is not None)
    if log:
        log(f"{cfg.method}: registered {done.ref} ({done.seconds:.1f} s training)")
    return {"ref": done.ref, "digest": done.digest, "config_digest": cfg.digest(), "seconds": done.seconds,
            "peak_memory": done.peak_memory, "memory_kind": done.memory_kind, "steps": done.steps,
            "resumed_from": done.resumed_from}


def _row(info: Any, entry: dict, backbone_params: int, reused: bool) -> MethodRow:
    return MethodRow(method=info.method, ref=info.ref, params=info.params, share=info.params / backbone_params,
                     stored_bytes=info.size, metrics=info.metrics or {}, seconds=entry["seconds"],
                     peak_memory=entry["peak_memory"], memory_kind=entry["memory_kind"],
                     resumed_from=entry.get("resumed_from", 0), reused=reused)


def _silent(text: str) -> None:
    """A log that drops its lines (``--json``)."""
