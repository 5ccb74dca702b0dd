"""A `vopstore train` killed with SIGKILL mid-run resumes from its last checkpoint and finishes.

The same command is run again after the kill; the registered prompt set must be
byte-identical (same sha256) to the one of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vopstore.cli.app import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kill_task(tmp_path_factory):
    from vopstore.trainer.data import generate_synthetic_task

    return generate_synthetic_task(tmp_path_factory.mktemp("kill-task"), n_train=32, n_test=4, seed=9,
                                   size=32, frames=4)


def _argv(task, backbone_dir, run_dir):
    # 4 epochs x 8 steps, a checkpoint after every step: a kill always lands between two checkpoints.
    return ["train", "--task", "killed", "--data", str(task.root), "--method", "vop-f+p",
            "--backbone", str(backbone_dir), "--batch-size", "4", "--frames", "4", "--epochs", "4",
            "--run-dir", str(run_dir), "--set", "checkpoint_every=1", "--set", "log_every=1",
            "--set", "hflip=false", "--json"]


def _logged_steps(run_dir) -> int:
    log = run_dir / "log.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def test_sigkilled_training_resumes_and_matches_an_uninterrupted_run(tmp_path, capsys, kill_task,
                                                                       tiny_backbone_dir):
    import torch

    argv = _argv(kill_task, tiny_backbone_dir, tmp_path / "killed-run")
    # Same thread count as this process: another split of the matmuls changes the last bits.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    child = subprocess.Popen([sys.executable, "-m", "vopstore.cli", *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while _logged_steps(tmp_path / "killed-run") < 3 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    steps_before_kill = _logged_steps(tmp_path / "killed-run")
    assert child.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert 3 <= steps_before_kill < 32

    capsys.readouterr()
    assert main(argv) == 0  # the same command again: resumes from train-state.pt
    resumed = json.loads(capsys.readouterr().out)
    # resumed from the last checkpoint: at most the one step in flight when killed is redone
    assert steps_before_kill - 1 <= resumed["resumed_from"] <= steps_before_kill and resumed["steps"] == 32

    assert main(_argv(kill_task, tiny_backbone_dir, tmp_path / "clean-run")) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean["steps"] == 32 and clean["resumed_from"] == 0
    assert resumed["digest"] == clean["digest"]
