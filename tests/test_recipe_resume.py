"""A run stopped mid-way resumes from its last training checkpoint and ends bit-identical."""

from __future__ import annotations

import json

import pytest
import torch

from vopstore.errors import ConfigError
from vopstore.trainer import recipe
from vopstore.trainer.config import TrainConfig


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from vopstore.trainer.data import generate_synthetic_task, read_split

    task = generate_synthetic_task(tmp_path_factory.mktemp("resume-task"), n_train=12, n_test=4, seed=5,
                                   size=32, frames=4)
    return read_split(task.format, task.root, "train")


def _cfg(tiny_backbone_dir, **kw):
    # 2 epochs of 3 steps: the resume crosses an epoch boundary; train=True draws random crops.
    base = dict(method="vop-f+p", backbone=str(tiny_backbone_dir), num_frames=4, batch_size=4, grad_accum=2,
                epochs=2, lr=5e-3, checkpoint_every=2, log_every=1)
    return TrainConfig(**{**base, **kw})


def _params(run):
    return {k: v.detach().clone() for k, v in run.method.state_dict().items()}


class _Seen:
    """Wraps a run's model to record the token ids and pixels of every micro-batch it is fed."""

    def __init__(self, run):
        self.model, self.batches = run.model, []
        run.model = self

    def __call__(self, ids, frames):
        self.batches.append((ids.detach().clone(), frames.detach().clone()))
        return self.model(ids, frames)


def _same_batches(got, want) -> bool:
    return len(got) == len(want) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                         for a, b in zip(got, want))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, toy, tiny_backbone, tiny_backbone_dir):
    """A run that never stopped (in-process loading), and the micro-batches it saw."""
    full = recipe.setup(_cfg(tiny_backbone_dir), toy, tmp_path_factory.mktemp("full"), backbone=tiny_backbone)
    seen = _Seen(full)
    recipe.train(full, progress=False)
    assert full.step == full.total_steps == 6 and len(seen.batches) == 12  # 6 steps x 2 micro-batches
    return full, seen.batches


@pytest.mark.parametrize("workers", [0, 2])
def test_stopped_run_resumes_and_matches_an_uninterrupted_run(tmp_path, toy, tiny_backbone, tiny_backbone_dir,
                                                              uninterrupted, workers):
    full, full_batches = uninterrupted
    cfg = _cfg(tiny_backbone_dir, num_workers=workers)
    first = recipe.setup(cfg, toy, tmp_path / "split", backbone=tiny_backbone)
    seen_first = _Seen(first)
    recipe.train(first, progress=False, stop_after=5)  # "killed" after step 5: last checkpoint is step 4
    killed_at = _params(first)
    resumed = recipe.setup(cfg, toy, tmp_path / "split", backbone=tiny_backbone)
    assert resumed.step == 4
    seen_resumed = _Seen(resumed)
    recipe.train(resumed, progress=False)

    # the same clips, captions, frames and augmentation as the run that never stopped, step for step
    assert _same_batches(seen_first.batches, full_batches[:10])
    assert _same_batches(seen_resumed.batches, full_batches[8:])
    final, reference = _params(resumed), _params(full)
    assert final.keys() == reference.keys()
    for name in final:
        assert torch.equal(final[name], reference[name]), name
    assert any(not torch.equal(killed_at[n], final[n]) for n in final)  # training did continue
    assert resumed.optimizer.state_dict()["state"].keys() == full.optimizer.state_dict()["state"].keys()
    assert resumed.scheduler.get_last_lr() == full.scheduler.get_last_lr()


def test_log_is_jsonl_with_loss_lr_and_throughput(tmp_path, toy, tiny_backbone, tiny_backbone_dir):
    run = recipe.setup(_cfg(tiny_backbone_dir, epochs=1), toy, tmp_path / "run", backbone=tiny_backbone)
    recipe.train(run, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / recipe.LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["loss"] > 0 and r["clips_per_s"] > 0 for r in rows)
    assert rows[0]["lr"] > rows[-1]["lr"] >= 0  # one warm-up step, then cosine decay
    # each row logs the lr its step used: no warm-up in 3 steps, so step 1 ran at the full lr, step 3 at a
    # quarter of it (cosine at 2/3), not the next step's (0 after the last step)
    assert rows[0]["lr"] == pytest.approx(run.cfg.lr) and rows[-1]["lr"] == pytest.approx(run.cfg.lr / 4)


def test_a_finished_run_trains_no_further_and_another_config_is_refused(tmp_path, toy, tiny_backbone,
                                                                        tiny_backbone_dir):
    cfg = _cfg(tiny_backbone_dir, epochs=1)
    recipe.train(recipe.setup(cfg, toy, tmp_path / "run", backbone=tiny_backbone), progress=False)
    again = recipe.setup(cfg, toy, tmp_path / "run", backbone=tiny_backbone)
    assert again.done and recipe.train(again, progress=False)["steps"] == 0
    with pytest.raises(ConfigError, match="holds a run with another training config"):
        recipe.setup(_cfg(tiny_backbone_dir, epochs=1, lr=1e-4), toy, tmp_path / "run", backbone=tiny_backbone)
