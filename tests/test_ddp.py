"""Two CPU ranks under torchrun (gloo) train the same prompts as one process at the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent("""
    import sys
    import torch
    torch.set_num_threads(1)
    from vopstore.trainer import recipe
    from vopstore.trainer.config import TrainConfig
    from vopstore.trainer.data import read_split
    from vopstore.trainer.distributed import init_distributed, shutdown

    backbone_dir, data_root, out, run_dir = sys.argv[1:5]
    dist = init_distributed()
    cfg = TrainConfig(method="vop-f+p", backbone=backbone_dir, num_frames=4, batch_size=4, epochs=1, lr=5e-3,
                      checkpoint_every=100)
    samples = read_split("generic", data_root, "train")
    run = recipe.setup(cfg, samples, run_dir, dist=dist)
    recipe.train(run, progress=False)
    if dist.is_main:
        torch.save({k: v.detach() for k, v in run.method.state_dict().items()}, out)
    shutdown(dist)
""")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_ranks_match_one_process_at_the_same_global_batch(tmp_path, tiny_backbone_dir):
    from vopstore.trainer.data import generate_synthetic_task

    task = generate_synthetic_task(tmp_path / "task", n_train=16, n_test=2, seed=11, size=32, frames=4)
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "params-ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(script), str(tiny_backbone_dir), str(task.root), str(out), str(tmp_path / "run-ddp")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(out)
    single = _single_process(tiny_backbone_dir, task.root, tmp_path / "run-single")
    init = _initial_params(tiny_backbone_dir)
    assert ddp.keys() == single.keys()
    for name in single:
        assert not torch.equal(single[name], init[name]), f"{name} did not train"
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-5, atol=1e-6, msg=name)


def _single_process(backbone_dir, data_root, run_dir):
    """The same script's training, in this process (no process group): batch 4 on one rank."""
    from vopstore.trainer import recipe
    from vopstore.trainer.config import TrainConfig
    from vopstore.trainer.data import read_split

    cfg = TrainConfig(method="vop-f+p", backbone=str(backbone_dir), num_frames=4, batch_size=4, epochs=1,
                      lr=5e-3, checkpoint_every=100)
    run = recipe.setup(cfg, read_split("generic", data_root, "train"), run_dir)
    recipe.train(run, progress=False)
    return {k: v.detach() for k, v in run.method.state_dict().items()}


def _initial_params(backbone_dir):
    from vopstore.backbone import load_backbone
    from vopstore.prompts import build_method

    method = build_method("vop-f+p", load_backbone(backbone_dir), seed=24, num_frames=4, k_shallow=2)
    return {k: v.detach() for k, v in method.state_dict().items()}
