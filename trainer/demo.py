"""``vopstore demo``: the whole loop offline, in about five minutes on two CPU cores.

1. a small CLIP pretrained once on synthetic image-caption pairs (cached, see :mod:`.pretrain`);
2. a synthetic video-text task whose captions depend on temporal order
   (motion direction, growing/shrinking, what appears first) with both temporal
   twins in the test split, so averaging frames cannot tell them apart;
3. zero-shot evaluation, then ``vop`` and ``vop-f`` trained, evaluated and
   registered in the local store;
4. a table zero-shot vs VoP vs VoP^F, with an honest note on the ordering.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vopstore.trainer.config import TrainConfig
from vopstore.trainer.pretrain import PretrainConfig

TASK = "demo"
METHODS = ("vop", "vop-f")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo: backbone pretraining, synthetic task, prompt training."""

    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    n_train: int = 256
    n_test: int = 64
    video_frames: int = 16
    num_frames: int = 8
    epochs: int = 16  # 8 left VoP at the zero-shot level in our runs; 16 still fits the 5-minute budget
    batch_size: int = 32
    lr: float = 3e-3  # from the spec's grid; 1e-2 diverged on this backbone in our runs
    seed: int = 24

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
        keys = ("n_train", "n_test", "video_frames", "seed")
        text = json.dumps({k: getattr(self, k) for k in keys} | {"size": self.pretrain.image_size})
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def ensure_task(folder: Path, cfg: DemoConfig, log: Callable[[str], None]) -> Path:
    """The synthetic task under ``folder`` (written once; a marker file says it is complete)."""
    from vopstore.trainer.data import generate_synthetic_task

    marker = folder / "vopstore-demo-task.json"
    if marker.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    log(f"synthetic task: writing {cfg.n_train} train + {cfg.n_test} test mp4 clips to {folder}")
    generate_synthetic_task(folder, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed,
                            size=cfg.pretrain.image_size, frames=cfg.video_frames)
    marker.write_text(json.dumps(dataclasses.asdict(cfg), sort_keys=True))
    return folder


def run_demo(cfg: DemoConfig = DemoConfig(), workdir: str | Path | None = None, store=None,
             log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """Run the demo; returns ``{"zero-shot": m, "vop": m, "vop-f": m}`` with ``m = {"t2v", "v2t", ...}``."""
    from vopstore.backbone import load_backbone
    from vopstore.home import home_dir
    from vopstore.trainer.pretrain import ensure_demo_backbone
    from vopstore.trainer.workflow import eval_zero_shot, train_task

    _quiet_transformers()
    start = time.perf_counter()
    home = home_dir()
    backbone_dir = ensure_demo_backbone(home, cfg.pretrain, log)
    data = ensure_task(Path(workdir) if workdir else home / "cache" / "demo-task" / cfg.task_digest(), cfg, log)
    backbone = load_backbone(backbone_dir)
    if store is None:
        from vopstore.store import open_store

        store = open_store()
    results = {"zero-shot": eval_zero_shot(data, cfg.train_config("vop", str(backbone_dir)), backbone)}
    log(f"zero-shot: t2v R@1 {results['zero-shot']['t2v']['R@1']:.1f}")
    with tempfile.TemporaryDirectory(prefix="vopstore-demo-") as runs:
        for method in METHODS:
            t0 = time.perf_counter()
            res = train_task(TASK, data, cfg.train_config(method, str(backbone_dir)), run_dir=Path(runs) / method,
                             store=store, backbone=backbone, message=f"vopstore demo ({method})",
                             progress=progress, log=log)
            results[method] = {**res.metrics, "ref": res.ref, "seconds": round(time.perf_counter() - t0, 1)}
            log(f"{method}: registered {res.ref}  t2v R@1 {res.metrics['t2v']['R@1']:.1f}  "
                f"({results[method]['seconds']:.0f} s)")
    for line in verdict(results):
        log(line)
    log(f"demo finished in {time.perf_counter() - start:.0f} s")
    return results


def verdict(results: dict) -> list[str]:
    """Plain statements of how the paper's ordering (zero-shot < VoP < VoP^F on t2v R@1) came out."""
    r1 = {k: results[k]["t2v"]["R@1"] for k in ("zero-shot", *METHODS)}
    lines = [f"t2v R@1: zero-shot {r1['zero-shot']:.1f}, VoP {r1['vop']:.1f}, VoP^F {r1['vop-f']:.1f}"]
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
