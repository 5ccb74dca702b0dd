"""Symmetric InfoNCE at CLIP's temperature: the mean of text->video and video->text cross-entropy.

The loss the VoP paper states (Sec. 4.1), in the form of the X-Pool code it was trained with:
``logits = exp(logit_scale) * cos``, cross-entropy against the diagonal along each axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity_logits(text: torch.Tensor, video: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """``exp(logit_scale) * cos(text_i, video_j)`` as a (B_text, B_video) matrix.

    Args:
        text: (B, D) text embeddings, normalised here.
        video: (B, D) pooled video embeddings, normalised here (X-Pool re-normalises the frame mean).
        logit_scale: the frozen backbone's ``logit_scale`` (a log value; ``exp`` of CLIP's is 100).
    """
    scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=text.device).exp()
    return scale * F.normalize(text.float(), dim=-1) @ F.normalize(video.float(), dim=-1).t()


def contrastive_loss(text: torch.Tensor, video: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Mean of text->video and video->text cross-entropy; row i of each side is a pair."""
    logits = similarity_logits(text, video, logit_scale)
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
