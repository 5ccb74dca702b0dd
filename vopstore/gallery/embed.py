"""Embedding a gallery's videos for one or more tasks, decoding each video once per frame count.

Tasks are grouped by the frame count their index key says; within a group a batch of
videos is decoded and preprocessed once (:func:`vopstore.video.decode_frames`, the same
path as ``Retriever.encode_video`` on files) and every task that lacks a video gets its
row in ONE mixed-task forward (``Snapshot.encode_video`` with ``tasks=`` per row), so
the result is exactly what ``encode_video(paths, tasks=[...], normalize=True)`` gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vopstore.errors import DataError
from vopstore.progress import ProgressBar


@dataclass
class Plan:
    """One index to extend: the videos its key lacks, and (filled by :func:`embed`) their vectors."""

    task: str | None
    key: Any
    label: str
    frames: int
    missing: list[str]
    dim: int
    ids: list[str] = field(default_factory=list)
    vectors: np.ndarray | None = None

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        self.ids += ids
        self.vectors = vectors if self.vectors is None else np.concatenate([self.vectors, vectors])


def embed(snapshot: Any, videos: Mapping[str, Path], plans: list[Plan], *, batch_size: int, progress: bool,
          gallery: str) -> None:
    """Fill each plan's ``ids`` / ``vectors`` with its missing videos, in gallery order.

    Raises (after the plans hold what was embedded before it) DataError for a video that
    cannot be decoded, naming its id.
    """
    groups: dict[int, list[Plan]] = {}
    for plan in plans:
        if plan.missing:
            groups.setdefault(plan.frames, []).append(plan)
    work = []  # (frames, plans, the videos any of them lacks, in gallery order)
    for frames, members in groups.items():
        wanted = set().union(*(p.missing for p in members))
        work.append((frames, members, [vid for vid in videos if vid in wanted]))
    total = sum(len(order) for _, _, order in work)
    if not total:
        return
    with ProgressBar(f"embedding {gallery}", total, enabled=progress) as bar:
        for frames, members, order in work:
            lacking = [set(p.missing) for p in members]
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                pixels = _pixels(snapshot.backbone, videos, batch, frames, gallery)
                rows, tasks, owners = [], [], []
                for plan, lacks in zip(members, lacking):
                    picked = [j for j, vid in enumerate(batch) if vid in lacks]
                    rows += picked
                    tasks += [plan.task] * len(picked)
                    owners.append((plan, [batch[j] for j in picked], len(picked)))
                out = snapshot.encode_video(pixels[rows] if rows != list(range(len(batch))) else pixels,
                                            tasks=tasks, normalize=True)
                vectors = out.detach().float().cpu().numpy()
                offset = 0
                for plan, ids, count in owners:
                    if count:
                        plan.add(ids, vectors[offset : offset + count])
                    offset += count
                bar.advance(len(batch))


def _pixels(backbone: Any, videos: Mapping[str, Path], batch: list[str], frames: int, gallery: str):
    """(B, F, 3, S, S) pixel values of ``batch``: each video decoded once (same pipeline as load_videos)."""
    import torch  # the galleries' search and listing need only numpy

    from vopstore import video  # torch, as above

    out = []
    for vid in batch:
        try:
            out.append(video.preprocess(video.decode_frames(videos[vid], frames), backbone))
        except DataError as exc:
            raise DataError(f"video {vid!r} of gallery {gallery}: {exc}; the videos before it are indexed; fix it "
                            f"or remove it (vopstore index rm {gallery} --id {vid}) and build again") from None
    return torch.stack(out)
