"""Retrieval metrics from a text x video similarity matrix, and bootstrap intervals over queries.

Ties never help a query. With ``h`` candidates scored strictly higher than its
ground truth and ``t`` others scored exactly as high, a random tie-break puts
the ground truth at a rank drawn uniformly from ``h+1 .. h+t+1``; every metric
is the expectation under that draw. R@K = 100 x the mean over queries of
P(rank <= K) = clamp((K - h) / (t + 1), 0, 1); MnR = the mean expected rank
``h + 1 + t/2``; MdR = the median of the per-query expected ranks (the mean of
the two middle ones for an even count, as numpy's median). A collapsed model
whose scores are all equal therefore scores as chance (R@1 = 100 / N), where
ranking a query at ``1 + h`` would give it R@1 = 100. Without ties these are the
usual ranks and metrics.

Several captions per video (``text_to_video``): text->video ranks each caption's
video among all videos; video->text scores each video's caption group by its
best caption and ranks the video's own group among all groups, as X-Pool does
(max over a video's captions, then a rank over videos).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vopstore.errors import DataError

KS = (1, 5, 10)
DIRECTIONS = ("t2v", "v2t")


@dataclass(frozen=True)
class QueryRanks:
    """Per query: how many candidates score strictly higher than its ground truth, how many tie with it."""

    higher: torch.Tensor
    tied: torch.Tensor

    def expected_rank(self) -> torch.Tensor:
        """1-based rank of each query's ground truth, expected under random tie-breaking."""
        return self.higher.double() + 1 + self.tied.double() / 2

    def recall_at(self, k: int) -> torch.Tensor:
        """Per query, the probability that its ground truth lands in the top ``k`` (a float in [0, 1])."""
        return ((k - self.higher.double()) / (self.tied.double() + 1)).clamp(0, 1)

    def metrics(self) -> dict[str, float]:
        """R@1/5/10 (percent), MdR and MnR, as Python floats."""
        out = {f"R@{k}": float(self.recall_at(k).mean() * 100) for k in KS}
        ranks = self.expected_rank()
        out["MdR"] = float(ranks.quantile(0.5))
        out["MnR"] = float(ranks.mean())
        return out


def _check(sim: torch.Tensor, text_to_video: torch.Tensor | None) -> torch.Tensor:
    if sim.ndim != 2 or sim.numel() == 0:
        raise DataError(f"expected a non-empty (N_text, N_video) similarity matrix, got shape {tuple(sim.shape)}")
    if torch.isnan(sim).any():
        raise DataError("the similarity matrix holds NaN; check the embeddings (fp16 overflow?)")
    n_text, n_video = sim.shape
    if text_to_video is None:
        if n_text != n_video:
            raise DataError(f"a {n_text}x{n_video} matrix needs text_to_video (the video of each text)")
        return torch.arange(n_text, device=sim.device)
    t2v = torch.as_tensor(text_to_video, device=sim.device).long()
    if t2v.shape != (n_text,) or t2v.min() < 0 or t2v.max() >= n_video:
        raise DataError(f"text_to_video must hold {n_text} video indices in [0, {n_video}), got {tuple(t2v.shape)}")
    if torch.bincount(t2v, minlength=n_video).min() == 0:
        raise DataError("every video needs at least one caption; drop videos without captions before evaluating")
    return t2v


def _ranks_along(scores: torch.Tensor, gt: torch.Tensor, dim: int) -> QueryRanks:
    """Ranks of ``gt`` (broadcast along ``dim``) among ``scores``; the ground truth itself is not a tie."""
    higher = (scores > gt).sum(dim)
    tied = (scores == gt).sum(dim) - 1
    return QueryRanks(higher, tied)


def t2v_ranks(sim: torch.Tensor, t2v: torch.Tensor) -> QueryRanks:
    """Each text's video among all videos."""
    return _ranks_along(sim, sim.gather(1, t2v[:, None]), dim=1)


def v2t_ranks(sim: torch.Tensor, t2v: torch.Tensor) -> QueryRanks:
    """Each video's caption group among all groups (a group scores by its best caption)."""
    n_video = sim.shape[1]
    # group[g, v] = max over captions of video g of sim[caption, v]
    group = torch.full((n_video, n_video), float("-inf"), dtype=sim.dtype, device=sim.device)
    group = group.scatter_reduce(0, t2v[:, None].expand(-1, n_video), sim, reduce="amax")
    return _ranks_along(group, group.diagonal()[None, :], dim=0)


def query_ranks(sim: torch.Tensor, text_to_video: torch.Tensor | None = None) -> dict[str, QueryRanks]:
    """``{"t2v": QueryRanks, "v2t": QueryRanks}`` of a (N_text, N_video) similarity matrix.

    ``text_to_video`` is the (N_text,) index of each text's video; None for the square 1:1 case.
    """
    sim = sim.detach().double()  # exact for fp16/bf16/fp32 input, so no ties are invented
    t2v = _check(sim, text_to_video)
    return {"t2v": t2v_ranks(sim, t2v), "v2t": v2t_ranks(sim, t2v)}


def retrieval_metrics(sim: torch.Tensor, text_to_video: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """Text->video and video->text retrieval metrics.

    Args:
        sim: (N_text, N_video) similarities (higher = more similar).
        text_to_video: (N_text,) index of each text's video; None for the square 1:1 case.

    Returns:
        ``{"t2v": {"R@1", "R@5", "R@10", "MdR", "MnR"}, "v2t": {...}}`` as Python floats.
    """
    return {direction: ranks.metrics() for direction, ranks in query_ranks(sim, text_to_video).items()}


def _bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n < 1 or n_boot < 1:
        raise DataError(f"a bootstrap needs at least one query and one resample, got {n} and {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise DataError(f"a confidence level is in (0, 1), got {level}")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(per_query, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval, in percent, of the mean of per-query values (e.g. ``recall_at(1)``).

    Queries are resampled with replacement ``n_boot`` times from a seeded generator,
    so the same values and seed always give the same interval.
    """
    values = np.asarray(torch.as_tensor(per_query).double().cpu())
    means = values[_bootstrap_indices(len(values), n_boot, seed)].mean(axis=1) * 100
    return _interval(means, level)


def paired_gain_ci(base, other, level: float = 0.95, n_boot: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """Gain of ``other`` over ``base`` (percent) and its paired bootstrap interval, on the same queries.

    Both models are scored on one resample of the queries per replicate, so the
    interval measures the gain itself rather than two independent noises.

    Returns:
        ``(gain, low, high)``.
    """
    a = np.asarray(torch.as_tensor(base).double().cpu())
    b = np.asarray(torch.as_tensor(other).double().cpu())
    if a.shape != b.shape:
        raise DataError(f"a paired bootstrap needs the same queries for both models, got {a.shape} and {b.shape}")
    idx = _bootstrap_indices(len(a), n_boot, seed)
    low, high = _interval((b[idx].mean(axis=1) - a[idx].mean(axis=1)) * 100, level)
    return float((b.mean() - a.mean()) * 100), low, high
