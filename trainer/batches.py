"""The seam between the data readers and the recipe: datasets, seeded epoch order, batches.

Data order is a pure function of ``(seed, epoch, rank, world_size)``
(``DistributedSampler``), so a resumed run can skip to the exact batch it
stopped at, and one process sees the same global batches as N ranks together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def make_dataset(samples, cfg, backbone, train: bool, cache_dir: Path | None = None):
    """A ``VideoTextDataset`` with the backbone's preprocessing and the config's frames."""
    from vopstore.trainer.data import VideoTextDataset

    if cache_dir is None and cfg.frame_cache:
        from vopstore.home import cache_dir as home_cache

        cache_dir = home_cache() / "frames"
    return VideoTextDataset(list(samples), num_frames=cfg.num_frames, image_size=image_size(cfg, backbone),
                            mean=backbone.image_mean, std=backbone.image_std, train=train,
                            cache_dir=cache_dir, on_error=cfg.on_error, flip=cfg.hflip, seed=cfg.seed,
                            resize_size=backbone.resize_size)


def image_size(cfg, backbone) -> int:
    """The backbone's input size; a config that names another one is refused, never silently ignored."""
    from vopstore.errors import ConfigError

    if cfg.image_size and cfg.image_size != backbone.image_size:
        raise ConfigError(f"image_size={cfg.image_size} but backbone {backbone.name} takes "
                          f"{backbone.image_size}px images; drop the setting (0 = the backbone's) or use a "
                          f"backbone of that size")
    return backbone.image_size


def frames_of(item: Any) -> torch.Tensor:
    """The (F, 3, H, W) float frames of one dataset item (a mapping or a tuple)."""
    if isinstance(item, dict):
        return item["pixel_values"]
    return item[0]


def caption_of(item: Any, sample) -> str:
    """The caption of an item; a skipped undecodable video brings its replacement's caption."""
    if isinstance(item, dict):
        return item.get("caption", sample.caption)
    return item[1] if len(item) > 1 and isinstance(item[1], str) else sample.caption


def epoch_order(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """This rank's sample indices for ``epoch``: a seeded shuffle, split across ranks, tail dropped."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return list(sampler)


def steps_per_epoch(n: int, micro: int, grad_accum: int, world_size: int) -> int:
    """Optimiser steps in one epoch (incomplete batches and accumulation groups are dropped)."""
    return (n // world_size) // micro // grad_accum


def load_batch(dataset, samples, indices: list[int], epoch: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Frames (B, F, 3, H, W) and captions of the given sample indices.

    The dataset draws its augmentation from (seed, epoch, index), so the same
    batch comes out whichever rank or resumed process loads it.
    """
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    items = [dataset[i] for i in indices]
    frames = torch.stack([frames_of(item) for item in items])
    return frames, [caption_of(item, samples[i]) for item, i in zip(items, indices)]
