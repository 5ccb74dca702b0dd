"""Skipped data is visible: counted in the version's training config, and an error under ``--strict``."""

from __future__ import annotations

import json
import shutil

import pytest

from vopstore.cli.app import main


@pytest.fixture(scope="module")
def gappy_task(tmp_path_factory):
    """A synthetic task (generic JSONL) whose training list names one video that is not there."""
    from vopstore.trainer.data import generate_synthetic_task

    task = generate_synthetic_task(tmp_path_factory.mktemp("gappy"), n_train=8, n_test=4, seed=9, size=32,
                                   frames=4)
    root = tmp_path_factory.mktemp("gappy-copy") / "data"
    shutil.copytree(task.root, root)
    with open(root / "train.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"video": "videos/absent.mp4", "caption": "a clip nobody recorded"}) + "\n")
    return root


def _train(root, backbone_dir, *extra):
    return ["train", "--task", "gappy", "--data", str(root), "--method", "vop", "--backbone", str(backbone_dir),
            "--batch-size", "4", "--frames", "4", "--max-steps", "1", "--json", *extra]


def test_the_version_records_what_was_skipped_and_the_sampling_rules(capsys, caplog, gappy_task,
                                                                     tiny_backbone_dir):
    from vopstore.store import open_store

    capsys.readouterr()
    assert main(_train(gappy_task, tiny_backbone_dir)) == 0
    captured = capsys.readouterr()
    closing = [r.getMessage() for r in caplog.records if r.name == "vopstore.trainer.data"][-1]
    assert closing.startswith("generic split 'train' of ")  # said at the end of loading (a warning on stderr)
    assert closing.endswith("8 samples, 1 skipped (1x video not found)")
    config = open_store().resolve(json.loads(captured.out)["ref"]).training_config
    assert config["skipped"] == {"train": {"kept": 8, "skipped": 1, "reasons": {"video not found": 1}},
                                 "test": {"kept": 4, "skipped": 0, "reasons": {}}}
    assert config["train_sampling"] == "uniform" and config["strict"] is False
    assert config["eval_sampling"].startswith("uniform: frame (a + b - 1) // 2")


def test_strict_refuses_to_train_or_evaluate_on_incomplete_data(capsys, gappy_task, tiny_backbone_dir):
    with pytest.raises(SystemExit) as exc:
        main(_train(gappy_task, tiny_backbone_dir, "--strict"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 1 and len([line for line in err if line.startswith("error:")]) == 1
    assert err[-1].startswith("error: --strict: split 'train' of ") and "1x video not found" in err[-1]
    assert "train.jsonl:9: video not found" in err[-1]
    # the test split is complete: a strict zero-shot evaluation runs
    assert main(["eval", "--zero-shot", "--data", str(gappy_task), "--backbone", str(tiny_backbone_dir),
                 "--set", "num_frames=4", "--strict", "--json"]) == 0
