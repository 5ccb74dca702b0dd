"""Retrieval metrics against oracles written here: plain loops without ties; with ties, an exact
enumeration of every tie-break order (tiny matrices) or a Monte-Carlo over random tie-breaks."""

from __future__ import annotations

import itertools
import statistics

import pytest
import torch

from vopstore.errors import DataError
from vopstore.trainer.metrics import bootstrap_ci, paired_gain_ci, retrieval_metrics


def group_scores(sim: list[list[float]], t2v: list[int]) -> list[list[float]]:
    """group[g][v] = best score of video g's captions against video v (loops)."""
    n_text, n_video = len(sim), len(sim[0])
    return [[max(sim[i][v] for i in range(n_text) if t2v[i] == g) for v in range(n_video)] for g in range(n_video)]


def oracle(sim: list[list[float]], t2v: list[int]) -> dict:
    """Loops only, for matrices where nothing ties with a ground truth: rank = 1 + #{strictly better}."""
    n_text, n_video = len(sim), len(sim[0])
    group = group_scores(sim, t2v)
    assert all(sum(s == row[t2v[i]] for s in row) == 1 for i, row in enumerate(sim)), "a tie: use another oracle"
    assert all(sum(group[g][v] == group[v][v] for g in range(n_video)) == 1 for v in range(n_video))
    t_ranks = []
    for i in range(n_text):
        gt = sim[i][t2v[i]]
        t_ranks.append(1 + sum(1 for j in range(n_video) if sim[i][j] > gt))
    v_ranks = []
    for v in range(n_video):
        v_ranks.append(1 + sum(1 for g in range(n_video) if group[g][v] > group[v][v]))
    return {"t2v": summarize(t_ranks), "v2t": summarize(v_ranks)}


def enumeration_oracle(sim: list[list[float]], t2v: list[int]) -> dict:
    """Exact: average over EVERY tie-break order of the candidates (n_video! of them; tiny matrices only).

    A tie-break order is a permutation of the candidates; among equal scores the earlier one ranks higher.
    """
    n_text, n_video = len(sim), len(sim[0])
    group = group_scores(sim, t2v)
    t_queries = [(sim[i], t2v[i]) for i in range(n_text)]
    v_queries = [([group[g][v] for g in range(n_video)], v) for v in range(n_video)]
    out = {}
    for direction, queries in (("t2v", t_queries), ("v2t", v_queries)):
        orders = list(itertools.permutations(range(n_video)))
        ranks = [[0] * len(orders) for _ in queries]
        for o, order in enumerate(orders):
            position = {c: p for p, c in enumerate(order)}
            for q, (scores, gt) in enumerate(queries):
                ranks[q][o] = 1 + sum(1 for c in range(n_video) if scores[c] > scores[gt]
                                      or (scores[c] == scores[gt] and position[c] < position[gt]))
        out[direction] = summarize_draws(ranks)
    return out


def monte_carlo_oracle(sim: torch.Tensor, t2v: torch.Tensor, draws: int = 20000, seed: int = 0) -> dict:
    """Break every tie by a fresh uniform random key per candidate, ``draws`` times, and average."""
    g = torch.Generator().manual_seed(seed)
    group = torch.tensor(group_scores(sim.tolist(), t2v.tolist()), dtype=torch.float64)
    out = {}
    for direction, scores, gt in (("t2v", sim.double(), t2v), ("v2t", group.t(), torch.arange(sim.shape[1]))):
        key = torch.rand(draws, *scores.shape, generator=g)
        gt_score = scores.gather(1, gt[:, None])
        gt_key = key.gather(2, gt[None, :, None].expand(draws, -1, 1))
        beats = (scores > gt_score) | ((scores == gt_score) & (key > gt_key))
        ranks = 1 + beats.sum(2)  # (draws, queries)
        out[direction] = summarize_draws(ranks.t().tolist())
    return out


def summarize_draws(ranks_per_query: list[list[int]]) -> dict:
    """R@K = mean over queries of the share of draws with rank <= K; MdR/MnR of each query's mean rank."""
    n = len(ranks_per_query)
    out = {f"R@{k}": 100.0 * sum(sum(r <= k for r in rs) / len(rs) for rs in ranks_per_query) / n
           for k in (1, 5, 10)}
    expected = [sum(rs) / len(rs) for rs in ranks_per_query]
    out["MdR"] = float(statistics.median(expected))
    out["MnR"] = sum(expected) / n
    return out


def summarize(ranks: list[int]) -> dict:
    out = {f"R@{k}": 100.0 * sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}
    out["MdR"] = float(statistics.median(ranks))
    out["MnR"] = sum(ranks) / len(ranks)
    return out


def assert_same(got: dict, want: dict, tolerance: dict | None = None) -> None:
    """Equal to 1e-9, or within ``tolerance[key]`` (the Monte-Carlo oracle's noise)."""
    assert set(got) == {"t2v", "v2t"}
    for direction in ("t2v", "v2t"):
        assert set(got[direction]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
        for key, value in want[direction].items():
            assert isinstance(got[direction][key], float)
            tol = (tolerance or {}).get(key, 1e-9)
            assert got[direction][key] == pytest.approx(value, abs=tol), (direction, key)


# The oracle's standard error is below 0.1 point for R@K, 0.01 for MnR, 0.05 for each expected rank.
MC_TOLERANCE = {"R@1": 0.5, "R@5": 0.5, "R@10": 0.5, "MnR": 0.06, "MdR": 0.25}


@pytest.mark.parametrize("seed", range(6))
def test_square_random_matches_oracle(seed):
    g = torch.Generator().manual_seed(seed)
    n = [5, 12, 30, 31, 1, 2][seed]
    sim = torch.randn(n, n, generator=g)
    assert_same(retrieval_metrics(sim), oracle(sim.tolist(), list(range(n))))


@pytest.mark.parametrize("seed", range(6))
def test_ties_match_every_tie_break_order(seed):
    """Integer-valued similarities, many exact ties: the expectation over all 720 tie-break orders."""
    g = torch.Generator().manual_seed(100 + seed)
    sim = torch.randint(0, 3, (6, 6), generator=g).float()
    assert_same(retrieval_metrics(sim), enumeration_oracle(sim.tolist(), list(range(6))))


@pytest.mark.parametrize("seed", range(3))
def test_ties_match_random_tie_breaking(seed):
    g = torch.Generator().manual_seed(150 + seed)
    sim = torch.randint(0, 3, (20, 20), generator=g).float()
    assert_same(retrieval_metrics(sim), monte_carlo_oracle(sim, torch.arange(20), seed=seed), MC_TOLERANCE)


@pytest.mark.parametrize("seed", range(4))
def test_multi_caption_ties_match_every_tie_break_order(seed):
    g = torch.Generator().manual_seed(250 + seed)
    n_video = 5
    t2v = torch.cat([torch.arange(n_video), torch.randint(0, n_video, (4,), generator=g)])
    t2v = t2v[torch.randperm(len(t2v), generator=g)]
    sim = torch.randint(0, 3, (len(t2v), n_video), generator=g).float()
    assert_same(retrieval_metrics(sim, t2v), enumeration_oracle(sim.tolist(), t2v.tolist()))


@pytest.mark.parametrize("seed", range(6))
def test_multi_caption_matches_oracle(seed):
    g = torch.Generator().manual_seed(200 + seed)
    n_video = 9
    t2v = torch.cat([torch.arange(n_video), torch.randint(0, n_video, (14,), generator=g)])
    t2v = t2v[torch.randperm(len(t2v), generator=g)]
    if seed % 2:  # integer scores: ties
        sim = torch.randint(0, 4, (len(t2v), n_video), generator=g).float()
        assert_same(retrieval_metrics(sim, t2v), monte_carlo_oracle(sim, t2v, seed=seed), MC_TOLERANCE)
    else:
        sim = torch.randn(len(t2v), n_video, generator=g)
        assert_same(retrieval_metrics(sim, t2v), oracle(sim.tolist(), t2v.tolist()))


@pytest.mark.parametrize("n", [1, 2, 7, 12, 40])
def test_a_collapsed_model_scores_as_chance(n):
    """All scores equal: each rank 1..n equally likely, so R@K = min(K, n)/n and MdR = MnR = (n + 1)/2."""
    chance = {f"R@{k}": 100.0 * min(k, n) / n for k in (1, 5, 10)} | {"MdR": (n + 1) / 2, "MnR": (n + 1) / 2}
    assert_same(retrieval_metrics(torch.zeros(n, n)), {"t2v": chance, "v2t": chance})
    many = torch.full((2 * n, n), 0.25)  # two captions per video, still all equal
    assert_same(retrieval_metrics(many, torch.arange(n).repeat(2)), {"t2v": chance, "v2t": chance})
    if n <= 7:
        assert_same(retrieval_metrics(torch.zeros(n, n)), enumeration_oracle([[0.0] * n] * n, list(range(n))))


def test_adversarial_matrices():
    n = 12
    # ground truth strictly worst everywhere: rank n for every query in both directions
    worst = torch.ones(n, n) - 2 * torch.eye(n)
    got = retrieval_metrics(worst)
    assert_same(got, oracle(worst.tolist(), list(range(n))))
    assert got["t2v"] == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "MdR": 12.0, "MnR": 12.0}
    assert got["v2t"] == got["t2v"]
    # one hub video scores highest for every text: t2v suffers; in v2t every text ties on the hub's column
    hub = torch.eye(n)
    hub[:, 3] = 5.0
    got = retrieval_metrics(hub)
    # t2v by hand: 11 texts rank 2 (behind the hub), the hub's own text ranks 1
    assert got["t2v"] == pytest.approx({"R@1": 100 / 12, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": 23 / 12})
    # v2t by hand: 11 videos rank 1; the hub ties all 12 groups, expected rank 6.5, R@1 share 1/12
    assert got["v2t"] == pytest.approx({"R@1": 100 * (11 + 1 / 12) / 12, "R@5": 100 * (11 + 5 / 12) / 12,
                                        "R@10": 100 * (11 + 10 / 12) / 12, "MdR": 1.0, "MnR": (11 + 6.5) / 12})
    assert_same(got, monte_carlo_oracle(hub, torch.arange(n)), MC_TOLERANCE)
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


# --- bootstrap intervals: checked against the normal approximation of a proportion ----------------------------


def normal_interval(hits: int, n: int) -> tuple[float, float]:
    p = hits / n
    half = 1.959964 * (p * (1 - p) / n) ** 0.5
    return 100 * (p - half), 100 * (p + half)


@pytest.mark.parametrize("hits, n", [(100, 400), (40, 400), (200, 400)])
def test_bootstrap_interval_of_a_recall_matches_the_normal_approximation(hits, n):
    values = torch.zeros(n)
    values[torch.randperm(n, generator=torch.Generator().manual_seed(hits))[:hits]] = 1.0
    low, high = bootstrap_ci(values, n_boot=4000, seed=3)
    want_low, want_high = normal_interval(hits, n)
    assert low == pytest.approx(want_low, abs=0.75) and high == pytest.approx(want_high, abs=0.75)
    assert bootstrap_ci(values, n_boot=4000, seed=3) == (low, high)  # seeded: the same interval again


def test_bootstrap_of_constant_values_is_a_point_and_levels_nest():
    assert bootstrap_ci(torch.full((50,), 0.5)) == (50.0, 50.0)
    values = (torch.arange(300) % 4 == 0).double()
    low95, high95 = bootstrap_ci(values, level=0.95)
    low50, high50 = bootstrap_ci(values, level=0.5)
    assert low95 < low50 < 25.0 < high50 < high95


def test_paired_gain_sees_a_consistent_gain_that_separate_intervals_miss():
    """20 of 400 queries newly right, none lost: +5 points. Each model's own interval is about
    +-4.5 points, so the two overlap; the paired interval is about 5 +- 2.1 and excludes 0."""
    g = torch.Generator().manual_seed(7)
    base = (torch.rand(400, generator=g) < 0.3).double()
    misses = torch.nonzero(base == 0).flatten()[:20]
    other = base.clone()
    other[misses] = 1.0
    gain, low, high = paired_gain_ci(base, other, n_boot=4000, seed=1)
    assert gain == pytest.approx(5.0)
    half = 100 * 1.959964 * (0.05 * 0.95 / 400) ** 0.5  # the gain per query is 0/1 with p = 0.05
    assert low == pytest.approx(5.0 - half, abs=0.6) and high == pytest.approx(5.0 + half, abs=0.6)
    assert low > 0
    assert bootstrap_ci(base)[1] > bootstrap_ci(other)[0]  # separate intervals overlap


def test_bootstrap_refuses_bad_input():
    with pytest.raises(DataError, match="at least one query"):
        bootstrap_ci(torch.zeros(0))
    with pytest.raises(DataError, match="confidence level"):
        bootstrap_ci(torch.zeros(3), level=95)
    with pytest.raises(DataError, match="same queries"):
        paired_gain_ci(torch.zeros(3), torch.zeros(4))
