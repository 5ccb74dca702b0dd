"""Smoke tests of the real CLI entry: `vopstore train`, `vopstore eval REF`, `vopstore eval --zero-shot`."""

from __future__ import annotations

import json

import pytest

from vopstore.cli.app import main

METRIC_KEYS = {"R@1", "R@5", "R@10", "MdR", "MnR"}


@pytest.fixture(scope="module")
def toy_task(tmp_path_factory):
    """A synthetic temporal-order task: 16 train / 8 test clips, 32 px, 4 frames (generic JSONL layout)."""
    from vopstore.trainer.data import generate_synthetic_task

    return generate_synthetic_task(tmp_path_factory.mktemp("toy-task"), n_train=16, n_test=8, seed=3,
                                   size=32, frames=4)


def _run_json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _check_metrics(metrics):
    assert set(metrics) == {"t2v", "v2t"}
    for direction in metrics.values():
        assert set(direction) == METRIC_KEYS
        assert 0 <= direction["R@1"] <= direction["R@5"] <= direction["R@10"] <= 100
        assert 1 <= direction["MdR"] <= 8 and 1 <= direction["MnR"] <= 8


def test_train_registers_a_version_with_metrics_config_and_fingerprint(capsys, toy_task, tiny_backbone_dir):
    from vopstore.backbone import load_backbone
    from vopstore.store import open_store

    out = _run_json(capsys, ["train", "--task", "toy", "--data", str(toy_task.root), "--method", "vop-f",
                             "--backbone", str(tiny_backbone_dir), "--batch-size", "4", "--frames", "4",
                             "--max-steps", "3", "--set", "hflip=false", "--set", "lr=3e-3", "--json"])
    assert out["ref"] == "local/toy@v1" and out["steps"] == 3
    _check_metrics(out["metrics"])
    info = open_store().resolve("toy@v1")
    assert info.method == "vop-f" and info.metrics == out["metrics"] and info.digest == out["digest"]
    assert info.training_config["lr"] == 3e-3 and info.training_config["num_frames"] == 4
    assert info.training_config["hflip"] is False and info.training_config["steps"] == 3
    assert info.backbone_fingerprint == load_backbone(tiny_backbone_dir).fingerprint

    # the stored prompts reproduce the metrics they were registered with
    again = _run_json(capsys, ["eval", "toy@v1", "--data", str(toy_task.root), "--json"])
    assert again["ref"] == "local/toy@v1" and again["metrics"] == out["metrics"]

    # a second training is a new version
    second = _run_json(capsys, ["train", "--task", "toy", "--data", str(toy_task.root), "--method", "vop",
                                "--backbone", str(tiny_backbone_dir), "--batch-size", "4", "--frames", "4",
                                "--max-steps", "2", "--json"])
    assert second["ref"] == "local/toy@v2"


def test_eval_zero_shot_uses_the_same_path(capsys, toy_task, tiny_backbone_dir):
    out = _run_json(capsys, ["eval", "--zero-shot", "--task", "toy", "--data", str(toy_task.root),
                             "--backbone", str(tiny_backbone_dir), "--set", "num_frames=4", "--json"])
    assert out["zero_shot"] is True
    _check_metrics(out["metrics"])


def test_train_prints_the_ref_for_people(capsys, toy_task, tiny_backbone_dir):
    capsys.readouterr()
    assert main(["train", "--task", "people", "--data", str(toy_task.root), "--method", "vop",
                 "--backbone", str(tiny_backbone_dir), "--batch-size", "8", "--frames", "4",
                 "--max-steps", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "local/people@v1"


@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "Bad/Name", "--data", "."], "task"),
    (["train", "--task", "toy", "--data", "/nonexistent/data"], "not found"),
    (["train", "--task", "toy", "--data", ".", "--set", "epochs=0"], "epochs"),
    (["eval", "--data", "."], "--zero-shot"),
])
def test_user_errors_are_one_line_and_exit_1(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.startswith("error:") and message in err and len(err.splitlines()) == 1


def test_an_image_size_the_backbone_does_not_take_is_refused(capsys, toy_task, tiny_backbone_dir):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "toy", "--data", str(toy_task.root), "--backbone", str(tiny_backbone_dir),
              "--frames", "4", "--batch-size", "4", "--max-steps", "1", "--set", "image_size=224"])
    last = capsys.readouterr().err.splitlines()[-1]  # progress lines come first on stderr
    assert exc.value.code == 1 and last.startswith("error: image_size=224")
