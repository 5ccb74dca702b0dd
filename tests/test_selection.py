"""Checkpoint selection: X-Pool's evaluation points and window, the kept prompts, resume, the record."""

from __future__ import annotations

import json

import pytest
import torch

from vopstore.errors import ConfigError
from vopstore.trainer import recipe
from vopstore.trainer.config import TrainConfig
from vopstore.trainer.selection import Selector, carve_validation, eval_points, make_selector, metric_value


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from vopstore.trainer.data import generate_synthetic_task, read_split

    task = generate_synthetic_task(tmp_path_factory.mktemp("select-task"), n_train=12, n_test=6, seed=9,
                                   size=32, frames=4)
    return task, read_split(task.format, task.root, "train"), read_split(task.format, task.root, "test")


def _cfg(tiny_backbone_dir, **kw):
    # 2 epochs of 3 steps; 2 evaluations per epoch (after steps 2 and 3 of each), a window of 2
    base = dict(method="vop-f+p", backbone=str(tiny_backbone_dir), num_frames=4, batch_size=4, epochs=2,
                lr=2e-2, checkpoint_every=2, log_every=1, hflip=False, select="best", evals_per_epoch=2,
                select_window=2, eval_batch_size=8)
    return TrainConfig(**{**base, **kw})


def _params(method):
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


@pytest.mark.parametrize("steps, evals, want", [
    (100, 10, set(range(10, 101, 10))),
    (3, 2, {2, 3}),  # linspace(0, 2, 3)[1:] = indices 1, 2 -> after the 2nd and 3rd updates
    (7, 10, set(range(1, 8))),  # more evaluations than steps: after every step
    (1, 10, {1}),
])
def test_evaluation_points_are_x_pools(steps, evals, want):
    # X-Pool: evaluate after batch index i for i in linspace(0, steps - 1, evals + 1, dtype=int)[1:]
    assert eval_points(steps, evals) == want


def test_window_average_picks_the_peak_like_a_hand_computed_sequence():
    class Params(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

    method, cfg = Params(), TrainConfig(select="best", select_window=3, evals_per_epoch=4)
    selector = Selector(cfg, ["x"], "val")
    scores = [10.0, 30.0, 20.0, 50.0, 0.0, 0.0, 60.0]
    # windows of 3 by hand: 10, 20, 20, 33.3, 23.3, 16.7, 20 -> best at the 4th evaluation (step 40)
    for i, score in enumerate(scores):
        method.w.data.fill_(float(i))
        selector.record(10 * (i + 1), {"t2v": {"R@1": score, "R@5": 0.0, "R@10": 0.0}}, method)
    assert selector.best_step == 40 and selector.best_score == pytest.approx(100 / 3)
    selector.load_best(method)
    assert method.w.item() == 3.0
    assert selector.summary()["last_score"] == 60.0 and selector.summary()["evaluations"] == 7


def test_metric_names():
    m = {"t2v": {"R@1": 1.0, "R@5": 2.0, "R@10": 4.0}, "v2t": {"R@1": 8.0, "R@5": 0.0, "R@10": 0.0}}
    assert metric_value(m, "t2v/R@1") == 1.0 and metric_value(m, "t2v/rsum") == 7.0
    assert metric_value(m, "v2t/R@1") == 8.0
    for bad in ("t2v/MdR", "R@1", "x/R@1"):
        with pytest.raises(ConfigError, match="select_metric"):
            TrainConfig(select_metric=bad)


def test_carve_validation_holds_out_whole_videos_seeded(toy):
    from vopstore.trainer.data.sample import Sample, SampleList, Skipped

    samples = SampleList([Sample(f"v{i % 10}.mp4", f"c{i}", f"v{i % 10}") for i in range(30)],
                         [Skipped("a.csv", 3, "empty caption")])
    train, held = carve_validation(samples, 0.2, seed=4)
    held_ids = {s.video_id for s in held}
    assert len(held_ids) == 2 and len(held) == 6 and len(train) == 24
    assert not held_ids & {s.video_id for s in train}
    assert carve_validation(samples, 0.2, seed=4) == (train, held)
    assert train.skipped == samples.skipped
    with pytest.raises(ConfigError, match="leaves none to train on"):
        carve_validation(samples[:3], 0.9, seed=0)


def test_config_refuses_a_val_fraction_without_best_and_best_without_a_split():
    with pytest.raises(ConfigError, match="set select=best"):
        TrainConfig(val_fraction=0.1)
    with pytest.raises(ConfigError, match="needs a selection split"):
        make_selector(TrainConfig(select="best"), [])
    assert make_selector(TrainConfig(), None) is None


@pytest.mark.slow
def test_best_is_the_window_peak_of_independent_evaluations_and_does_not_change_training(
        tmp_path, toy, tiny_backbone, tiny_backbone_dir):
    from vopstore.trainer.evaluate import evaluate

    _, train, test = toy
    cfg = _cfg(tiny_backbone_dir)
    # the reference: a select=last run stepped one step at a time, every step's prompts kept
    last = recipe.setup(_cfg(tiny_backbone_dir, select="last"), train, tmp_path / "last", backbone=tiny_backbone)
    snapshots = {}
    while not last.done:
        recipe.train(last, progress=False, stop_after=1)
        snapshots[last.step] = _params(last.method)
    assert sorted(snapshots) == [1, 2, 3, 4, 5, 6]

    best = recipe.setup(cfg, train, tmp_path / "best", backbone=tiny_backbone,
                        selection=make_selector(cfg, test, "test"))
    recipe.train(best, progress=False)
    for name, value in _params(best.method).items():  # evaluating on the way changed nothing
        assert torch.equal(value, snapshots[6][name]), name

    # oracle: evaluate each snapshot at X-Pool's points on its own, window of 2, first strict maximum
    scores = []
    for step in (2, 3, 5, 6):
        best.method.load_state_dict(snapshots[step])
        scores.append((step, evaluate(tiny_backbone, best.method, test, cfg)["t2v"]["R@1"]))
    windows = []
    for i, (step, _) in enumerate(scores):
        recent = [s for _, s in scores[max(0, i - 1):i + 1]]
        windows.append((step, sum(recent) / len(recent)))
    want_step, want_score = max(windows, key=lambda w: (w[1], -w[0]))
    assert [h["step"] for h in best.selection.history] == [2, 3, 5, 6]
    assert [h["score"] for h in best.selection.history] == pytest.approx([s for _, s in scores])
    assert (best.selection.best_step, best.selection.best_score) == (want_step, pytest.approx(want_score))
    best.selection.load_best(best.method)
    for name, value in _params(best.method).items():
        assert torch.equal(value, snapshots[want_step][name]), name
    rows = [json.loads(line) for line in (tmp_path / "best" / recipe.LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows if "select" in r] == [2, 3, 5, 6]


@pytest.mark.slow
def test_a_stopped_run_resumes_with_its_selection_state(tmp_path, toy, tiny_backbone, tiny_backbone_dir):
    _, train, test = toy
    cfg = _cfg(tiny_backbone_dir)
    full = recipe.setup(cfg, train, tmp_path / "full", backbone=tiny_backbone,
                        selection=make_selector(cfg, test, "test"))
    recipe.train(full, progress=False)

    first = recipe.setup(cfg, train, tmp_path / "split", backbone=tiny_backbone,
                         selection=make_selector(cfg, test, "test"))
    recipe.train(first, progress=False, stop_after=5)  # killed after step 5; the checkpoint is step 4
    resumed = recipe.setup(cfg, train, tmp_path / "split", backbone=tiny_backbone,
                           selection=make_selector(cfg, test, "test"))
    assert resumed.step == 4 and [h["step"] for h in resumed.selection.history] == [2, 3]
    recipe.train(resumed, progress=False)
    assert resumed.selection.history == full.selection.history
    assert (resumed.selection.best_step, resumed.selection.best_score) == \
        (full.selection.best_step, full.selection.best_score)
    for name, value in full.selection.best_state.items():
        assert torch.equal(resumed.selection.best_state[name], value), name

    # a finished run reopened keeps its best prompts (they live in the state file, not in memory)
    reopened = recipe.setup(cfg, train, tmp_path / "full", backbone=tiny_backbone,
                            selection=make_selector(cfg, test, "test"))
    assert reopened.done and reopened.selection.best_step == full.selection.best_step


def test_best_without_a_selection_split_is_refused_at_setup(tmp_path, toy, tiny_backbone, tiny_backbone_dir):
    _, train, _ = toy
    with pytest.raises(ConfigError, match="needs a selection split"):
        recipe.setup(_cfg(tiny_backbone_dir), train, tmp_path / "run", backbone=tiny_backbone)


@pytest.mark.slow
def test_cli_records_the_rule_and_registers_the_selected_prompts(capsys, toy, tiny_backbone_dir):
    from vopstore.cli.app import main
    from vopstore.prompts import load_prompt_set
    from vopstore.store import open_store

    task, _, _ = toy
    argv = ["train", "--task", "toy", "--data", str(task.root), "--method", "vop", "--backbone",
            str(tiny_backbone_dir), "--batch-size", "4", "--frames", "4", "--epochs", "2", "--set", "hflip=false",
            "--set", "evals_per_epoch=2", "--json"]
    assert main(argv + ["--select", "best", "--val-fraction", "0.25"]) == 0
    out = json.loads(capsys.readouterr().out)
    store = open_store()
    info = store.resolve(out["ref"])
    record = info.training_config["selection"]
    assert info.training_config["select"] == "best" and info.training_config["val_fraction"] == 0.25
    assert record["rule"] == "best" and record["split"] == "val" and record["metric"] == "t2v/R@1"
    assert record["window"] == 5 and record["evaluations"] >= 2 and 1 <= record["step"] <= out["steps"]
    # 12 training clips, a quarter of the videos held out: 9 train, 2 steps of 4 per epoch
    assert out["steps"] == 4
    # the registered prompts are the selected ones: the run's state file holds them too
    state = torch.load(f"{out['run_dir']}/{recipe.STATE_FILE}", weights_only=False)
    from vopstore.backbone import load_backbone

    stored = load_prompt_set(store.fetch(info), load_backbone(tiny_backbone_dir)).state_dict()
    for name, value in state["selection"]["best_state"].items():
        assert torch.equal(stored[name].cpu(), value), name

    assert main(argv + ["--select", "last"]) == 0
    last = json.loads(capsys.readouterr().out)
    assert store.resolve(last["ref"]).training_config["selection"] == {"rule": "last", "step": last["steps"]}
