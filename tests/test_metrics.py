"""Retrieval metrics against a naive full-matrix oracle written here with plain loops."""

from __future__ import annotations

import statistics

import pytest
import torch

from vopstore.errors import DataError
from vopstore.trainer.metrics import retrieval_metrics


def oracle(sim: list[list[float]], t2v: list[int]) -> dict:
    """Loops only: rank = 1 + #{strictly better}; v2t groups a video's captions by their best score."""
    n_text, n_video = len(sim), len(sim[0])
    t_ranks = []
    for i in range(n_text):
        gt = sim[i][t2v[i]]
        t_ranks.append(1 + sum(1 for j in range(n_video) if sim[i][j] > gt))
    v_ranks = []
    for v in range(n_video):
        group = [max(sim[i][v] for i in range(n_text) if t2v[i] == g) for g in range(n_video)]
        v_ranks.append(1 + sum(1 for g in range(n_video) if group[g] > group[v]))
    return {"t2v": summarize(t_ranks), "v2t": summarize(v_ranks)}


def summarize(ranks: list[int]) -> dict:
    out = {f"R@{k}": 100.0 * sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}
    out["MdR"] = float(statistics.median(ranks))
    out["MnR"] = sum(ranks) / len(ranks)
    return out


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == {"t2v", "v2t"}
    for direction in ("t2v", "v2t"):
        assert set(got[direction]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
        for key, value in want[direction].items():
            assert isinstance(got[direction][key], float)
            assert got[direction][key] == pytest.approx(value, abs=1e-9), (direction, key)


@pytest.mark.parametrize("seed", range(6))
def test_square_random_matches_oracle(seed):
    g = torch.Generator().manual_seed(seed)
    n = [5, 12, 30, 31, 1, 2][seed]
    sim = torch.randn(n, n, generator=g)
    assert_same(retrieval_metrics(sim), oracle(sim.tolist(), list(range(n))))


@pytest.mark.parametrize("seed", range(6))
def test_ties_match_oracle(seed):
    """Integer-valued similarities: many exact ties, resolved optimistically on both sides."""
    g = torch.Generator().manual_seed(100 + seed)
    sim = torch.randint(0, 3, (20, 20), generator=g).float()
    assert_same(retrieval_metrics(sim), oracle(sim.tolist(), list(range(20))))


@pytest.mark.parametrize("seed", range(6))
def test_multi_caption_matches_oracle(seed):
    g = torch.Generator().manual_seed(200 + seed)
    n_video = 9
    t2v = torch.cat([torch.arange(n_video), torch.randint(0, n_video, (14,), generator=g)])
    t2v = t2v[torch.randperm(len(t2v), generator=g)]
    sim = torch.randint(0, 4, (len(t2v), n_video), generator=g).float() if seed % 2 else \
        torch.randn(len(t2v), n_video, generator=g)
    assert_same(retrieval_metrics(sim, t2v), oracle(sim.tolist(), t2v.tolist()))


def test_adversarial_matrices():
    n = 12
    # all equal: optimistic ties put every ground truth first
    assert_same(retrieval_metrics(torch.zeros(n, n)), oracle([[0.0] * n] * n, list(range(n))))
    assert retrieval_metrics(torch.zeros(n, n))["t2v"]["R@1"] == 100.0
    # ground truth strictly worst everywhere: rank n for every query in both directions
    worst = torch.ones(n, n) - 2 * torch.eye(n)
    got = retrieval_metrics(worst)
    assert_same(got, oracle(worst.tolist(), list(range(n))))
    assert got["t2v"] == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "MdR": 12.0, "MnR": 12.0}
    # one hub video scores highest for every text: t2v suffers, v2t only for the hub
    hub = torch.eye(n)
    hub[:, 3] = 5.0
    assert_same(retrieval_metrics(hub), oracle(hub.tolist(), list(range(n))))
    # a reversed-permutation ground truth with huge magnitudes (float64 keeps them apart)
    perm = torch.arange(n).flip(0)
    big = torch.randn(n, n, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 1e6
    assert_same(retrieval_metrics(big, perm), oracle(big.tolist(), perm.tolist()))


def test_known_values_even_median():
    # text 0 -> rank 1, text 1 -> rank 2 (video 0 beats its video 1)
    sim = torch.tensor([[0.9, 0.1], [0.8, 0.3]])
    got = retrieval_metrics(sim)
    assert got["t2v"] == {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.5, "MnR": 1.5}
    # video 0: its caption 0.9 beats 0.8 -> rank 1; video 1: 0.3 beats 0.1 -> rank 1
    assert got["v2t"]["R@1"] == 100.0


@pytest.mark.parametrize("sim, t2v, match", [
    (torch.zeros(3, 4), None, "needs text_to_video"),
    (torch.zeros(3, 3), torch.tensor([0, 1, 1]), "at least one caption"),
    (torch.zeros(3, 3), torch.tensor([0, 1, 3]), "video indices"),
    # each check on its own (an `or` turned `and` must not let one through)
    (torch.zeros(3, 3), torch.tensor([0, 1, -1]), "video indices"),
    (torch.zeros(3, 3), torch.tensor([0, 1, 2, 0]), "video indices"),
    (torch.zeros(3, 3), torch.tensor([0, 1]), "video indices"),
    (torch.tensor([[float("nan")]]), None, "NaN"),
    (torch.zeros(0, 0), None, "non-empty"),
])
def test_bad_input_is_refused(sim, t2v, match):
    with pytest.raises(DataError, match=match):
        retrieval_metrics(sim, t2v)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_cuda_match_cpu():
    """Tensors on an accelerator stay there: every helper tensor is made on the input's device."""
    g = torch.Generator().manual_seed(300)
    t2v = torch.cat([torch.arange(6), torch.randint(0, 6, (5,), generator=g)])
    sim = torch.randn(len(t2v), 6, generator=g)
    want = retrieval_metrics(sim, t2v)
    assert retrieval_metrics(sim.cuda(), t2v.cuda()) == want
    assert retrieval_metrics(sim.cuda(), t2v.tolist()) == want
    square = torch.randn(7, 7, generator=g)
    assert retrieval_metrics(square.cuda()) == retrieval_metrics(square)
