"""Retrieval evaluation: encode every test text and video, one similarity matrix, R@K / MdR / MnR.

Zero-shot evaluation (``method=None``: the backbone alone, mean of frame
embeddings) goes through exactly the same path as a prompted one.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from vopstore.progress import ProgressBar
from vopstore.prompts import encode_text, encode_video
from vopstore.trainer.batches import frames_of, make_dataset
from vopstore.trainer.data.sample import group_by_video
from vopstore.trainer.metrics import query_ranks


@torch.no_grad()
def encode_texts(backbone, method, captions: Sequence[str], batch_size: int, autocast) -> torch.Tensor:
    """(N, D) L2-normalised text embeddings, in order."""
    n_prompts = getattr(method, "text_tokens", 0) if method is not None else 0
    out = []
    for start in range(0, len(captions), batch_size):
        ids = backbone.tokenize(list(captions[start:start + batch_size]), n_prompts)
        with autocast():
            out.append(F.normalize(encode_text(backbone, ids, method).float(), dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_videos(backbone, method, dataset, batch_size: int, autocast,
                  on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """(N, D) L2-normalised pooled video embeddings of ``dataset`` items, in order."""
    out = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        pixels = torch.stack([frames_of(item) for item in items]).to(backbone.device, backbone.dtype)
        with autocast():
            out.append(F.normalize(encode_video(backbone, pixels, method).float(), dim=-1).cpu())
        if on_batch:
            on_batch(len(items))
    return torch.cat(out)


@dataclass(frozen=True)
class Scores:
    """The similarity matrix of one evaluation and the video of each text: metrics and intervals come from it."""

    sim: torch.Tensor
    text_to_video: torch.Tensor

    def ranks(self) -> dict:
        """``{"t2v": QueryRanks, "v2t": QueryRanks}`` (see :mod:`vopstore.trainer.metrics`)."""
        return query_ranks(self.sim, self.text_to_video)

    def metrics(self) -> dict:
        """``{"t2v": {"R@1", "R@5", "R@10", "MdR", "MnR"}, "v2t": {...}}``."""
        return {direction: ranks.metrics() for direction, ranks in self.ranks().items()}

    def recall_at(self, k: int = 1) -> dict[str, torch.Tensor]:
        """Per query and direction, the probability that the ground truth is in the top ``k``."""
        return {direction: ranks.recall_at(k) for direction, ranks in self.ranks().items()}


def score(backbone, method, samples, cfg, autocast=None, progress: bool = False) -> Scores:
    """Encode every text and video of ``samples`` (a test split) with ``method`` (None = zero-shot).

    Videos with several captions are encoded once; the caption -> video map goes
    with the matrix, so t2v ranks the right video and v2t takes the best caption.
    """
    autocast = autocast or nullcontext
    videos, text_to_video = group_by_video(list(samples))
    dataset = make_dataset(videos, cfg, backbone, train=False)
    was_training = method.training if method is not None else False
    if method is not None:
        method.eval()
    try:
        with ProgressBar("evaluating", len(videos), enabled=progress, transient=True) as bar:
            video_emb = encode_videos(backbone, method, dataset, cfg.eval_batch_size, autocast, bar.advance)
        text_emb = encode_texts(backbone, method, [s.caption for s in samples], cfg.eval_batch_size, autocast)
    finally:
        if method is not None:
            method.train(was_training)
    return Scores(text_emb @ video_emb.t(), torch.as_tensor(text_to_video))


def evaluate(backbone, method, samples, cfg, autocast=None, progress: bool = False) -> dict:
    """Retrieval metrics of ``method`` (None = zero-shot) on ``samples`` (a test split).

    Returns:
        ``{"t2v": {"R@1", "R@5", "R@10", "MdR", "MnR"}, "v2t": {...}}``.
    """
    return score(backbone, method, samples, cfg, autocast, progress).metrics()
