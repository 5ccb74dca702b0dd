"""The training configuration: one validated dataclass, presets in TOML, CLI overrides.

A preset (``trainer/presets/<name>.toml``) carries the paper's protocol for one
benchmark; every field can then be overridden with ``key=value`` strings, which
are parsed as TOML values (so ``lr=3e-4``, ``method_config={n_prompts=4}`` and
``test_split="val"`` all work) and checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any, Iterable, Mapping

from vopstore.core import short_digest
from vopstore.errors import ConfigError, NotFoundError
from vopstore.prompts.configs import config_class
from vopstore.trainer.selection import SELECT_RULES, parse_metric

DEFAULT_BACKBONE = "openai/clip-vit-base-patch32"
PRECISIONS = ("auto", "fp32", "bf16")
TRAIN_SAMPLINGS = ("uniform", "random")  # the frame rules of trainer/data/frames.py


@dataclass
class TrainConfig:
    """Everything that decides a training run (paths and the task name live outside).

    ``batch_size`` is the GLOBAL batch of one optimiser step, summed over ranks and
    accumulation steps; the contrastive batch (the negatives one query sees) is
    ``batch_size // grad_accum``, gathered from every rank.
    """

    method: str = "vop-f+p"
    method_config: dict = field(default_factory=dict)
    backbone: str = DEFAULT_BACKBONE
    data_format: str = "auto"
    train_split: str = "train"
    test_split: str = "test"
    epochs: int = 5
    max_steps: int = 0  # >0 caps the run (smoke tests, quick demos); 0 = epochs decide
    batch_size: int = 32
    grad_accum: int = 1
    eval_batch_size: int = 32
    num_frames: int = 12
    image_size: int = 0  # 0: the backbone's; otherwise it must match the backbone (checked at set-up)
    lr: float = 1e-3
    aux_lr: float = 1e-4  # VoP^C's BiLSTM + FC: plain weights with no published rate, so below the prompts'
    weight_decay: float = 0.2
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 24
    precision: str = "auto"
    checkpoint_every: int = 50
    log_every: int = 10
    # Which prompts a version keeps (trainer/selection.py): "last" step, or "best" by select_metric averaged
    # over the last select_window of evals_per_epoch evaluations per epoch (X-Pool: 10, window 5, t2v R@1) on
    # val_fraction of the training videos held out, or on the test split itself when val_fraction is 0.
    select: str = "last"
    select_metric: str = "t2v/R@1"
    evals_per_epoch: int = 10
    select_window: int = 5
    val_fraction: float = 0.0
    num_workers: int = 0
    on_error: str = "skip"
    frame_cache: bool = False  # keep decoded frames under VOPSTORE_HOME/cache/frames (later epochs skip decoding)
    hflip: bool = True  # training flip; turn off when captions say left/right (the synthetic task)
    train_sampling: str = "uniform"  # training frames: the paper's uniform rule, or "random" within each range
    strict: bool = False  # any skipped row or video is an error instead of a counted skip

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field (UnknownMethodError for ``method``).

        Only names and values are checked here, nothing is read or loaded: a bad command fails
        before any video is decoded or backbone loaded.
        """
        _check_types(self)
        config_class(self.method)
        _check_selection(self)
        positive = ("epochs", "batch_size", "grad_accum", "eval_batch_size", "num_frames",
                    "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "num_workers", "seed", "weight_decay", "grad_clip", "image_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and self.aux_lr > 0):
            raise ConfigError(f"lr and aux_lr must be > 0, got lr={self.lr}, aux_lr={self.aux_lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.on_error not in ("skip", "raise"):
            raise ConfigError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")
        if self.train_sampling not in TRAIN_SAMPLINGS:
            raise ConfigError(f"train_sampling must be one of {', '.join(TRAIN_SAMPLINGS)}, "
                              f"got {self.train_sampling!r}")

    def micro_batch(self, world_size: int = 1) -> int:
        """Clips one rank feeds per forward; refuses a global batch that does not split evenly."""
        per_step = self.batch_size // self.grad_accum
        if per_step % world_size:
            raise ConfigError(
                f"batch_size/grad_accum = {per_step} does not split over {world_size} ranks; "
                "choose a batch size divisible by grad_accum x world size"
            )
        return per_step // world_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Short stable hash of the config, used to name a resumable run directory."""
        return short_digest(self.to_dict())


def _field_types() -> dict[str, type]:
    kinds = {"str": str, "int": int, "float": float, "dict": dict, "bool": bool}
    return {f.name: kinds[str(f.type)] for f in fields(TrainConfig)}


def _check_types(cfg: TrainConfig) -> None:
    for name, kind in _field_types().items():
        value = getattr(cfg, name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(cfg, name, float(value))  # TOML/JSON "1" for a float field is fine
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}")


def _check_selection(cfg: TrainConfig) -> None:
    if cfg.select not in SELECT_RULES:
        raise ConfigError(f"select must be one of {', '.join(SELECT_RULES)}, got {cfg.select!r}")
    parse_metric(cfg.select_metric)
    if cfg.evals_per_epoch < 1 or cfg.select_window < 1:
        raise ConfigError(f"evals_per_epoch and select_window must be >= 1, got {cfg.evals_per_epoch} "
                          f"and {cfg.select_window}")
    if not 0 <= cfg.val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.val_fraction and cfg.select != "best":
        raise ConfigError("val_fraction holds out training videos for select='best'; set select=best too, "
                          "or drop val_fraction")


def list_presets() -> list[str]:
    """Names of the presets shipped with the package."""
    folder = resources.files("vopstore.trainer").joinpath("presets")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_for(task: str | None, preset: str | None) -> str | None:
    """The preset to use: the one asked for, else the task's own name when a preset has it.

    So ``vopstore train --task lsmdc`` gets the paper's LSMDC protocol without ``--preset``.
    """
    if preset is not None:
        return preset
    return task if task in list_presets() else None


def preset_values(name: str) -> dict[str, Any]:
    """The raw key/values of one shipped preset (without the ``[preset]`` description table)."""
    path = resources.files("vopstore.trainer").joinpath("presets", f"{name}.toml")
    if not path.is_file():
        raise NotFoundError(f"no preset {name!r}; expected one of {', '.join(list_presets())}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"preset {name!r} is not valid TOML: {exc}") from None
    data.pop("preset", None)
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value``; the value is read as TOML, falling back to a bare string."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ConfigError(f"override must look like key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # `method=vop-f` needs no quotes
    return key, value


def build_config(preset: str | None = None, overrides: Mapping[str, Any] | None = None,
                 sets: Iterable[str] = ()) -> TrainConfig:
    """Defaults <- preset <- explicit overrides <- ``key=value`` strings, then validate.

    Args:
        preset: name of a shipped preset, or None for the defaults.
        overrides: field values from explicit CLI options (None values are ignored).
        sets: ``key=value`` strings (``--set``), applied last.
    """
    values: dict[str, Any] = preset_values(preset) if preset else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    values.update(dict(parse_override(s) for s in sets))
    known = _field_types()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cfg = TrainConfig(**values)
    config_class(cfg.method).from_dict(cfg.method_config)  # the method's own settings too, before any data is read
    return cfg


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Rebuild a config saved by :meth:`TrainConfig.to_dict`, ignoring keys a newer version added."""
    known = _field_types()
    return TrainConfig(**{k: v for k, v in data.items() if k in known})
