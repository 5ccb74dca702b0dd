"""Retrieval metrics from a text x video similarity matrix (spec §8).

Rank of a query = 1 + the number of candidates scored STRICTLY higher than
its ground truth, so ties are resolved optimistically (the ground truth wins
every tie). R@K = 100 x fraction of queries with rank <= K; MdR = median rank
(the mean of the two middle ranks for an even count, as numpy's median);
MnR = mean rank.

Several captions per video (``text_to_video``): text->video ranks each caption's
video among all videos; video->text scores each video's caption group by its
best caption and ranks the video's own group among all groups, as X-Pool does
(max over a video's captions, then a rank over videos).
"""

from __future__ import annotations

import torch

from vopstore.errors import DataError

KS = (1, 5, 10)


def ranks_to_metrics(ranks: torch.Tensor) -> dict[str, float]:
    """R@1/5/10 (percent), MdR and MnR of 1-based ranks, as Python floats."""
    r = ranks.double()
    out = {f"R@{k}": float((r <= k).double().mean() * 100) for k in KS}
    out["MdR"] = float(r.quantile(0.5))
    out["MnR"] = float(r.mean())
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


def t2v_ranks(sim: torch.Tensor, t2v: torch.Tensor) -> torch.Tensor:
    """1-based rank of each text's video among all videos (optimistic ties)."""
    gt = sim.gather(1, t2v[:, None])
    return (sim > gt).sum(1) + 1


def v2t_ranks(sim: torch.Tensor, t2v: torch.Tensor) -> torch.Tensor:
    """1-based rank of each video's caption group among all groups (group score = best caption)."""
    n_video = sim.shape[1]
    # group[g, v] = max over captions of video g of sim[caption, v]
    group = torch.full((n_video, n_video), float("-inf"), dtype=sim.dtype, device=sim.device)
    group = group.scatter_reduce(0, t2v[:, None].expand(-1, n_video), sim, reduce="amax")
    gt = group.diagonal()
    return (group > gt[None, :]).sum(0) + 1


def retrieval_metrics(sim: torch.Tensor, text_to_video: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """Text->video and video->text retrieval metrics.

    Args:
        sim: (N_text, N_video) similarities (higher = more similar).
        text_to_video: (N_text,) index of each text's video; None for the square 1:1 case.

    Returns:
        ``{"t2v": {"R@1", "R@5", "R@10", "MdR", "MnR"}, "v2t": {...}}`` as Python floats.
    """
    sim = sim.detach().double()  # exact for fp16/bf16/fp32 input, so no ties are invented
    t2v = _check(sim, text_to_video)
    return {"t2v": ranks_to_metrics(t2v_ranks(sim, t2v)), "v2t": ranks_to_metrics(v2t_ranks(sim, t2v))}
