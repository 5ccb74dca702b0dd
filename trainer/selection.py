"""Which prompts a run keeps: the last step's, or the best on a selection split (X-Pool's rule).

``select="last"`` keeps the prompts of the final step. ``select="best"``
evaluates ``evals_per_epoch`` times per epoch, at evenly spaced steps of which
the last ends the epoch, averages ``select_metric`` over the last
``select_window`` evaluations and keeps the prompts of the evaluation where that
average peaked. With X-Pool's values (10 per epoch, a window of 5, t2v R@1) this
is the rule of the harness VoP's code descends from.

The selection split is either ``val_fraction`` of the training videos, held out
from training (an honest choice), or, with ``val_fraction=0``, the test split
itself: X-Pool's protocol, which the paper's numbers most likely follow, and
which makes the reported test numbers optimistic.
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import Any

import numpy as np

from vopstore.errors import ConfigError

SELECT_RULES = ("last", "best")
SELECT_KEYS = ("R@1", "R@5", "R@10", "rsum")  # higher is better; rsum = R@1 + R@5 + R@10


def parse_metric(name: str) -> tuple[str, str]:
    """``"t2v/R@1"`` -> ``("t2v", "R@1")``; refuses directions and keys that cannot be maximised."""
    direction, _, key = name.partition("/")
    if direction not in ("t2v", "v2t") or key not in SELECT_KEYS:
        raise ConfigError(f"select_metric must look like t2v/R@1 (direction t2v or v2t, key one of "
                          f"{', '.join(SELECT_KEYS)}), got {name!r}")
    return direction, key


def metric_value(metrics: dict, name: str) -> float:
    """The value of ``select_metric`` ``name`` in a ``retrieval_metrics`` result."""
    direction, key = parse_metric(name)
    values = metrics[direction]
    return values["R@1"] + values["R@5"] + values["R@10"] if key == "rsum" else values[key]


def eval_points(steps_per_epoch: int, evals_per_epoch: int) -> set[int]:
    """Steps within an epoch (1-based, counted after the update) after which to evaluate.

    Evenly spaced over the epoch's updates, the last one ending it; fewer than
    ``evals_per_epoch`` when an epoch has fewer steps than that.
    """
    last = steps_per_epoch - 1
    return {int(x) + 1 for x in np.linspace(0, last, evals_per_epoch + 1, dtype=int)[1:]}


def carve_validation(samples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Split ``samples`` by video into (train, held out), holding out ``fraction`` of the videos.

    Whole videos go to one side, so no caption of a held-out video is trained on.
    The draw is seeded, so a resumed run holds out the same videos.
    """
    videos = sorted({s.video_id for s in samples})
    n_out = max(1, round(fraction * len(videos)))
    if n_out >= len(videos):
        raise ConfigError(f"val_fraction={fraction} of {len(videos)} training videos leaves none to train on; "
                          "lower val_fraction or add data")
    held = set(random.Random(seed).sample(videos, n_out))
    train = [s for s in samples if s.video_id not in held]
    out = [s for s in samples if s.video_id in held]
    if hasattr(samples, "skipped"):  # keep the reader's skip record with the training part
        train = type(samples)(train, samples.skipped)
    return train, out


class Selector:
    """Evaluations at X-Pool's points, the sliding window, and the best prompts so far.

    Its state (window, best score, step and parameters, history) is saved with the
    run's training state, so a resumed run selects as an uninterrupted one would.
    """

    def __init__(self, cfg: Any, samples: list, split: str):
        self.metric, self.evals_per_epoch, self.split = cfg.select_metric, cfg.evals_per_epoch, split
        self.samples = samples
        self.window: deque[float] = deque(maxlen=cfg.select_window)
        self.best_score = -math.inf
        self.best_step: int | None = None
        self.best_state: dict | None = None
        self.history: list[dict] = []

    def due(self, step: int, steps_per_epoch: int, total_steps: int) -> bool:
        """Whether to evaluate after optimiser step ``step`` (1-based); the run's last step always is."""
        within = (step - 1) % steps_per_epoch + 1
        return step == total_steps or within in eval_points(steps_per_epoch, self.evals_per_epoch)

    def record(self, step: int, metrics: dict, method: Any) -> dict:
        """Add one evaluation; keep ``method``'s parameters when the window average is a new best."""
        score = metric_value(metrics, self.metric)
        self.window.append(score)
        windowed = sum(self.window) / len(self.window)
        improved = windowed > self.best_score
        if improved:
            self.best_score, self.best_step = windowed, step
            self.best_state = {k: v.detach().cpu().clone() for k, v in method.state_dict().items()}
        entry = {"step": step, "score": score, "window": windowed, "best": improved}
        self.history.append(entry)
        return entry

    def load_best(self, method: Any) -> None:
        """Put the selected parameters into ``method`` (before the final evaluation and save)."""
        if self.best_state is None:
            raise ConfigError("select='best' finished without an evaluation; the run has no steps")
        method.load_state_dict(self.best_state)

    def summary(self) -> dict:
        """What a version records about how its prompts were chosen."""
        return {"rule": "best", "metric": self.metric, "window": self.window.maxlen, "split": self.split,
                "evals_per_epoch": self.evals_per_epoch, "step": self.best_step, "score": self.best_score,
                "evaluations": len(self.history),
                "last_score": self.history[-1]["score"] if self.history else None}

    def state_dict(self) -> dict:
        return {"window": list(self.window), "best_score": self.best_score, "best_step": self.best_step,
                "best_state": self.best_state, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.window.clear()
        self.window.extend(state["window"])
        self.best_score, self.best_step = state["best_score"], state["best_step"]
        self.best_state, self.history = state["best_state"], list(state["history"])


def make_selector(cfg: Any, samples: list | None, split: str = "test") -> Selector | None:
    """The run's selector: None for ``select="last"``; ``samples`` is the selection split for ``"best"``."""
    if cfg.select == "last":
        return None
    if not samples:
        raise ConfigError("select='best' needs a selection split: pass its samples (the test split, or "
                          "set val_fraction to hold out part of the training videos)")
    return Selector(cfg, samples, split)


def last_step_record(step: int) -> dict:
    """The selection record of a ``select="last"`` version."""
    return {"rule": "last", "step": step}
