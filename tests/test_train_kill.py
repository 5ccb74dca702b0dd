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

import pytest

from vopstore.cli.app import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kill_task(tmp_path_factory):
    from vopstore.trainer.data import generate_synthetic_task

    return generate_synthetic_task(tmp_path_factory.mktemp("kill-task"), n_train=16, n_test=4, seed=9,
                                   size=32, frames=4)


def _argv(task, backbone_dir, run_dir):
    # 4 epochs x 4 steps, a checkpoint after every step: a kill always lands between two checkpoints.
    return ["train", "--task", "killed", "--data", str(task.root), "--method", "vop-f+p",
            "--backbone", str(backbone_dir), "--batch-size", "4", "--frames", "4", "--epochs", "4",
            "--run-dir", str(run_dir), "--set", "checkpoint_every=1", "--set", "log_every=1",
            "--set", "hflip=false", "--json"]


def _logged_steps(run_dir) -> int:
    log = run_dir / "log.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


KILL_AT = 5  # steps finished (and checkpointed) before the kill: mid-way through the second epoch
TOTAL_STEPS = 16  # 16 clips / batch 4 x 4 epochs
# The child is `vopstore train` itself, killing itself with SIGKILL in the middle of step
# KILL_AT + 1 (gradients computed, parameters not yet updated): the same point on any machine.
CHILD = """
import os, signal, sys
from vopstore.cli.app import main
from vopstore.trainer import recipe

kill_at, real_step = int(sys.argv[1]), recipe._optimizer_step

def step(run, *args):
    if run.step == kill_at:
        run.optimizer.step = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    return real_step(run, *args)

recipe._optimizer_step = step
sys.exit(main(sys.argv[2:]))
"""


def test_sigkilled_training_resumes_and_matches_an_uninterrupted_run(tmp_path, capsys, kill_task,
                                                                       tiny_backbone_dir):
    import torch

    argv = _argv(kill_task, tiny_backbone_dir, tmp_path / "killed-run")
    # Same thread count as this process: another split of the matmuls changes the last bits.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    child = subprocess.run([sys.executable, "-c", CHILD, str(KILL_AT), *argv], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=env, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert _logged_steps(tmp_path / "killed-run") == KILL_AT

    capsys.readouterr()
    assert main(argv) == 0  # the same command again: resumes from train-state.pt
    resumed = json.loads(capsys.readouterr().out)
    # resumed from the last checkpoint: only the step in flight when killed is redone
    assert resumed["resumed_from"] == KILL_AT and resumed["steps"] == TOTAL_STEPS

    assert main(_argv(kill_task, tiny_backbone_dir, tmp_path / "clean-run")) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean["steps"] == TOTAL_STEPS and clean["resumed_from"] == 0
    assert resumed["digest"] == clean["digest"]
