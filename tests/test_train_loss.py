"""Loss, schedule and optimiser set-up of the recipe, checked against naive oracles."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vopstore.errors import ConfigError
from vopstore.trainer.batches import epoch_order, steps_per_epoch
from vopstore.trainer.config import TrainConfig
from vopstore.trainer.loss import contrastive_loss, similarity_logits
from vopstore.trainer.recipe import build_optimizer


def _naive_loss(t, v, scale):
    t = t / t.norm(dim=1, keepdim=True)
    v = v / v.norm(dim=1, keepdim=True)
    n, total = len(t), 0.0
    for i in range(n):
        row = [scale * float(t[i] @ v[j]) for j in range(n)]
        col = [scale * float(t[j] @ v[i]) for j in range(n)]
        total += -row[i] + math.log(sum(math.exp(x) for x in row))
        total += -col[i] + math.log(sum(math.exp(x) for x in col))
    return total / (2 * n)


def test_symmetric_infonce_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    t, v = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    got = contrastive_loss(t, v, torch.tensor(math.log(100.0)))
    assert float(got) == pytest.approx(_naive_loss(t, v, 100.0), rel=1e-5)


def test_temperature_is_exp_of_the_frozen_logit_scale():
    t = torch.eye(3)
    logits = similarity_logits(t, t, torch.tensor(math.log(100.0)))
    assert torch.allclose(logits, 100 * torch.eye(3), atol=1e-4)


def test_loss_is_invariant_to_pair_order_and_low_for_aligned_pairs():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(6, 16, generator=g)
    perm = torch.randperm(6, generator=g)
    scale = torch.tensor(math.log(100.0))
    v = torch.randn(6, 16, generator=g)
    assert torch.allclose(contrastive_loss(t, v, scale), contrastive_loss(t[perm], v[perm], scale))
    assert float(contrastive_loss(t, t, scale)) < 0.01 < float(contrastive_loss(t, v, scale))


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.prompts = nn.Parameter(torch.zeros(4, 8))
        self.lstm = nn.LSTM(8, 8)
        self.frozen = nn.Parameter(torch.zeros(3), requires_grad=False)


def test_optimizer_groups_prompts_and_context_generator_and_skips_frozen():
    cfg = TrainConfig(lr=1e-3, aux_lr=1e-4)
    opt, _ = build_optimizer(_Toy(), cfg, total_steps=100)
    lrs = [g["initial_lr"] for g in opt.param_groups]  # the scheduler starts warm-up at 0
    sizes = [sum(p.numel() for p in g["params"]) for g in opt.param_groups]
    assert lrs == [1e-3, 1e-4] and sizes[0] == 32 and all(g["weight_decay"] == 0.2 for g in opt.param_groups)
    assert isinstance(opt, torch.optim.AdamW)


def test_schedule_warms_up_linearly_for_10_percent_then_decays_as_a_cosine():
    cfg = TrainConfig(lr=1e-3, warmup_ratio=0.1)
    opt, sched = build_optimizer(_Toy(), cfg, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4) and lrs[10] == pytest.approx(1e-3)
    for step in (30, 55, 80, 99):
        expected = 1e-3 * 0.5 * (1 + math.cos(math.pi * (step - 10) / 90))
        assert lrs[step] == pytest.approx(expected, rel=1e-6)


def test_a_method_without_trainable_parameters_is_refused():
    module = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="has no trainable parameters"):
        build_optimizer(module, TrainConfig(), total_steps=10)


def test_epoch_order_is_seeded_and_ranks_partition_the_single_process_batches():
    one = epoch_order(16, epoch=3, seed=24)
    assert one == epoch_order(16, epoch=3, seed=24) and one != epoch_order(16, epoch=4, seed=24)
    r0, r1 = epoch_order(16, 3, 24, 0, 2), epoch_order(16, 3, 24, 1, 2)
    # global batch 4 = 2 per rank: the same clips as one process's batch of 4
    for b in range(4):
        assert sorted(r0[2 * b:2 * b + 2] + r1[2 * b:2 * b + 2]) == sorted(one[4 * b:4 * b + 4])
    assert steps_per_epoch(16, micro=2, grad_accum=1, world_size=2) == 4
    assert steps_per_epoch(17, micro=4, grad_accum=2, world_size=1) == 2
