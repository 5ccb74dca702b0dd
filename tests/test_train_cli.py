"""Smoke tests of the real CLI entry: `vopstore train`, `vopstore eval REF`, `vopstore eval --zero-shot`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
    # the method's own settings are checked with the options, before the (missing) data folder is read
    (["train", "--task", "toy", "--data", "/nonexistent/data", "--method", "vop-f", "--set",
      "method_config={k_shallo=3}"], "unknown setting(s) ['k_shallo'] for VopFConfig"),
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


def test_an_unknown_method_is_refused_before_any_data_or_backbone_is_read(tmp_path, vopstore_home):
    # Neither folder exists: were either read first, the error would name it, not the method. A fresh
    # interpreter shows what the refusal imported: no torch (no backbone) and no av (no video decoded).
    argv = ["train", "--task", "toy", "--method", "vop-x", "--data", str(tmp_path / "no-data"),
            "--backbone", str(tmp_path / "no-backbone")]
    code = ("import sys\nfrom vopstore.cli.app import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as exc:\n    status = exc.code\n"
            "print(status, *[m for m in ('torch', 'av', 'transformers') if m in sys.modules])")
    env = {**os.environ, "VOPSTORE_HOME": str(vopstore_home)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.split() == ["1"], done.stderr
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: unknown method 'vop-x'")
    for known in ("vop-f+p", "adapter-attn"):  # the choices: prompt methods and baselines
        assert known in err
    assert "no-data" not in err and "no-backbone" not in err
    assert not (tmp_path / "no-data").exists() and not (vopstore_home / "runs").exists()
