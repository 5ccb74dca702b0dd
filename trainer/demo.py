"""``vopstore demo``: the whole loop offline, in about five minutes on two CPU cores.

1. a small CLIP pretrained once on synthetic image-caption pairs (cached, see :mod:`.pretrain`);
2. a synthetic video-text task whose captions depend on temporal order
   (motion direction, growing/shrinking, what appears first) with both temporal
   twins in the test split, so averaging frames cannot tell them apart, on another
   background than the pretraining images (a shift of domain for the prompts to bridge);
   256 test clips, so that each R@1 has a 95% bootstrap interval of about +-4 points;
3. zero-shot evaluation, then ``vop`` and ``vop-f`` trained, evaluated and
   registered in the local store;
4. a table zero-shot vs VoP vs VoP^F, with an honest note on the ordering.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vopstore.core import short_digest
from vopstore.trainer.config import TrainConfig
from vopstore.trainer.pretrain import PretrainConfig

TASK = "demo"
METHODS = ("vop", "vop-f")
BOOTSTRAP_SEED = 0
PROMISED_GAIN = 5.0  # t2v R@1 points over zero-shot that the README promises for VoP and VoP^F


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo: backbone pretraining, synthetic task, prompt training."""

    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    n_train: int = 256
    n_test: int = 256  # 64 left a 95% interval of +-10 points of R@1; 256 halves it
    video_frames: int = 16
    num_frames: int = 4  # enough to show a motion and an order; half of 8's cost, spent on epochs
    epochs: int = 32
    batch_size: int = 32
    lr: float = 3e-3  # from the spec's grid; 1e-2 diverged on this backbone in our runs
    seed: int = 24
    # The pretraining images are on near-black (render.BACKGROUND), the task's clips on dark grey:
    # a shift of visual domain, as real videos are not the web images CLIP was trained on. On the
    # pretraining background zero-shot is already near what prompts reach here (12.9 vs VoP 16.0,
    # VoP's gain not beyond noise, in our run).
    background: tuple[int, int, int] = (100, 100, 100)

    @classmethod
    def quick(cls) -> DemoConfig:
        """Tiny sizes for the test suite (well under a minute); the numbers mean little."""
        tiny = PretrainConfig(hidden=32, layers=2, heads=2, image_size=32, patch_size=16, projection_dim=32,
                              pairs=256, steps=10, batch_size=32)
        return cls(pretrain=tiny, n_train=16, n_test=8, video_frames=4, num_frames=4, epochs=1, batch_size=8)

    def train_config(self, method: str, backbone: str) -> TrainConfig:
        # No flip: it would swap "left to right" without changing the caption.
        return TrainConfig(method=method, backbone=backbone, data_format="generic", epochs=self.epochs,
                           batch_size=self.batch_size, eval_batch_size=64, num_frames=self.num_frames,
                           image_size=self.pretrain.image_size, lr=self.lr, seed=self.seed, hflip=False,
                           checkpoint_every=1000, log_every=5, frame_cache=True)

    def task_digest(self) -> str:
        keys = ("n_train", "n_test", "video_frames", "seed", "background")
        return short_digest({k: getattr(self, k) for k in keys} | {"size": self.pretrain.image_size})


def ensure_task(folder: Path, cfg: DemoConfig, log: Callable[[str], None]) -> Path:
    """The synthetic task under ``folder`` (written once; a marker file says it is complete)."""
    from vopstore.trainer.data import generate_synthetic_task

    marker = folder / "vopstore-demo-task.json"
    if marker.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    log(f"synthetic task: writing {cfg.n_train} train + {cfg.n_test} test mp4 clips to {folder}")
    generate_synthetic_task(folder, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed,
                            size=cfg.pretrain.image_size, frames=cfg.video_frames, background=cfg.background)
    marker.write_text(json.dumps(dataclasses.asdict(cfg), sort_keys=True))
    return folder


def run_demo(cfg: DemoConfig = DemoConfig(), workdir: str | Path | None = None, store=None,
             log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """Run the demo.

    Returns:
        ``{"zero-shot": m, "vop": m, "vop-f": m, "test_queries": n}``; each ``m`` holds the metrics
        (``"t2v"``, ``"v2t"``) and ``"ci95"`` (R@1 bootstrap intervals); the trained ones also their
        ``"ref"``, ``"seconds"`` and ``"gain"`` over zero-shot with its paired interval.
    """
    from vopstore.backbone import load_backbone
    from vopstore.home import home_dir
    from vopstore.trainer.pretrain import ensure_demo_backbone
    from vopstore.trainer.workflow import read_splits

    _quiet_transformers()
    start = time.perf_counter()
    home = home_dir()
    backbone_dir = ensure_demo_backbone(home, cfg.pretrain, log)
    data = ensure_task(Path(workdir) if workdir else home / "cache" / "demo-task" / cfg.task_digest(), cfg, log)
    backbone = load_backbone(backbone_dir)
    if store is None:
        from vopstore.store import open_store

        store = open_store()
    eval_cfg = cfg.train_config("vop", str(backbone_dir))
    _, test = read_splits(eval_cfg, data, train=False)
    zero_shot = _score(backbone, None, test, eval_cfg)
    results: dict = {"zero-shot": summarize(zero_shot), "test_queries": len(test)}
    log(f"zero-shot: t2v R@1 {_with_ci(results['zero-shot'])}")
    with tempfile.TemporaryDirectory(prefix="vopstore-demo-") as runs:
        for method in METHODS:
            results[method] = _train_one(method, cfg, backbone, backbone_dir, data, Path(runs), store,
                                         test, zero_shot, log, progress)
    for line in verdict(results):
        log(line)
    log(f"demo finished in {time.perf_counter() - start:.0f} s")
    return results


def _train_one(method, cfg, backbone, backbone_dir, data, runs, store, test, zero_shot, log, progress) -> dict:
    """Train, register, then score the REGISTERED prompts again for the per-query intervals."""
    from vopstore.prompts import load_prompt_set
    from vopstore.trainer.workflow import train_task

    t0 = time.perf_counter()
    train_cfg = cfg.train_config(method, str(backbone_dir))
    res = train_task(TASK, data, train_cfg, run_dir=runs / method, store=store, backbone=backbone,
                     message=f"vopstore demo ({method})", progress=progress, log=log)
    scores = _score(backbone, load_prompt_set(store.fetch(store.resolve(res.ref)), backbone), test, train_cfg)
    out = {**summarize(scores, zero_shot), "ref": res.ref, "seconds": round(time.perf_counter() - t0, 1)}
    log(f"{method}: registered {res.ref}  t2v R@1 {_with_ci(out)}  ({out['seconds']:.0f} s)")
    return out


def _score(backbone, method, test, train_cfg):
    from vopstore.trainer.evaluate import score
    from vopstore.trainer.recipe import autocast_for

    return score(backbone, method, test, train_cfg, autocast_for(train_cfg, backbone.device))


def summarize(scores, baseline=None) -> dict:
    """Metrics of one model, its R@1 bootstrap intervals and, given a baseline, its paired gain over it."""
    from vopstore.trainer.metrics import bootstrap_ci, paired_gain_ci

    out = scores.metrics()
    hits = scores.recall_at(1)
    out["ci95"] = {d: {"R@1": list(bootstrap_ci(hits[d], seed=BOOTSTRAP_SEED))} for d in hits}
    if baseline is not None:
        base = baseline.recall_at(1)
        out["gain"] = {}
        for d in hits:
            gain, low, high = paired_gain_ci(base[d], hits[d], seed=BOOTSTRAP_SEED)
            out["gain"][d] = {"R@1": gain, "ci95": [low, high]}
    return out


def _with_ci(entry: dict, direction: str = "t2v") -> str:
    low, high = entry["ci95"][direction]["R@1"]
    return f"{entry[direction]['R@1']:.1f} [{low:.1f}, {high:.1f}]"


def beats_zero_shot(entry: dict, margin: float = PROMISED_GAIN) -> bool:
    """The README's promise for one trained model: t2v R@1 above zero-shot by more than ``margin``
    points, and the paired 95% bootstrap interval of that gain above zero."""
    gain = entry["gain"]["t2v"]
    return gain["R@1"] > margin and gain["ci95"][0] > 0


def verdict(results: dict) -> list[str]:
    """Plain statements of how the demo came out: intervals, gains, and the paper's ordering."""
    names = {"zero-shot": "zero-shot", "vop": "VoP", "vop-f": "VoP^F"}
    n = results.get("test_queries")
    lines = [f"t2v R@1 with 95% bootstrap intervals over {n} test queries: "
             + ", ".join(f"{names[k]} {_with_ci(results[k])}" for k in ("zero-shot", *METHODS))]
    for method in METHODS:
        gain = results[method]["gain"]["t2v"]
        beyond = "beyond noise" if gain["ci95"][0] > 0 else "NOT beyond noise"
        lines.append(f"{names[method]} - zero-shot: {gain['R@1']:+.1f} points, paired 95% interval "
                     f"[{gain['ci95'][0]:+.1f}, {gain['ci95'][1]:+.1f}] ({beyond})")
    r1 = {k: results[k]["t2v"]["R@1"] for k in ("zero-shot", *METHODS)}
    if r1["zero-shot"] < r1["vop"] < r1["vop-f"]:
        lines.append("ordering as in the paper: zero-shot < VoP < VoP^F (temporal layers help on this task)")
        return lines
    lines.append("ordering NOT as in the paper on this run (expected zero-shot < VoP < VoP^F):")
    if r1["vop"] <= r1["zero-shot"]:
        lines.append("  VoP did not beat zero-shot")
    if r1["vop-f"] <= r1["vop"]:
        lines.append("  VoP^F did not beat VoP (its inter-frame layers did not pay off here)")
    return lines


def _quiet_transformers() -> None:
    """transformers' own load/save progress bars would drown the demo's lines."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - older transformers
        pass
