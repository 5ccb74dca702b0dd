"""The seam between the data readers and the recipe: datasets, seeded step order, the training DataLoader.

Data order is a pure function of ``(seed, epoch, rank, world_size)``
(``DistributedSampler``), so a resumed run starts the sampler at the exact
step it stopped at, and one process sees the same global batches as N ranks
together. The sampler hands out ``(epoch, index)`` keys and the dataset draws
its augmentation from ``(seed, epoch, index)``, so DataLoader workers produce
the same items as the training process would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from vopstore.errors import ConfigError
from vopstore.home import cache_dir as home_cache_dir
from vopstore.trainer.data.dataset import VideoTextCollate, VideoTextDataset
from vopstore.trainer.data.frames import decode_in_one_thread


def make_dataset(samples, cfg, backbone, train: bool, cache_dir: Path | None = None):
    """A ``VideoTextDataset`` with the backbone's preprocessing and the config's frames."""
    if cache_dir is None and cfg.frame_cache:
        cache_dir = home_cache_dir() / "frames"
    strict = getattr(cfg, "strict", False)
    return VideoTextDataset(list(samples), num_frames=cfg.num_frames, image_size=image_size(cfg, backbone),
                            mean=backbone.image_mean, std=backbone.image_std, train=train,
                            cache_dir=cache_dir, on_error="raise" if strict else cfg.on_error, flip=cfg.hflip,
                            seed=cfg.seed, resize_size=backbone.resize_size,
                            sampling=getattr(cfg, "train_sampling", "uniform"))


def image_size(cfg, backbone) -> int:
    """The backbone's input size; a config that names another one is refused, never silently ignored."""
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


class StepSampler(Sampler):
    """This rank's micro-batches of optimiser steps ``[start, end)``, as lists of ``(epoch, index)`` keys.

    Step ``s`` is micro-batches ``s * grad_accum ...`` of epoch ``s // steps_per_epoch``'s
    :func:`epoch_order`. One sampler spans every epoch of the span, so one DataLoader
    iterator (and its workers) serves the whole run and prefetching crosses epoch ends.
    """

    def __init__(self, n: int, micro: int, grad_accum: int, steps_per_epoch: int, seed: int,
                 rank: int = 0, world_size: int = 1, start: int = 0, end: int = 0):
        self.n, self.micro, self.grad_accum, self.per_epoch = n, micro, grad_accum, steps_per_epoch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start, self.end = start, end

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.grad_accum

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, order_epoch = [], None
        for step in range(self.start, self.end):
            epoch, within = divmod(step, self.per_epoch)
            if epoch != order_epoch:
                order, order_epoch = epoch_order(self.n, epoch, self.seed, self.rank, self.world_size), epoch
            first = within * self.grad_accum * self.micro
            for k in range(self.grad_accum):
                yield [(epoch, i) for i in order[first + k * self.micro:first + (k + 1) * self.micro]]


def train_batches(dataset, sampler: StepSampler, num_workers: int, pin_memory: bool = False) -> Iterator[list[dict]]:
    """Per optimiser step of ``sampler``'s span, its ``grad_accum`` collated micro-batches.

    Each micro-batch is ``{"pixel_values": (B, F, 3, H, W), "captions", "index"}``. With
    ``num_workers > 0`` worker processes decode ahead (2 batches each); they start once and
    live for the whole span, every epoch of it (what ``persistent_workers`` buys a loader
    that is iterated once per epoch), and stop when the generator is closed or exhausted.
    """
    # The loader's own generator: the base seed it draws must not consume the global torch RNG,
    # which a resumed run restores from its checkpoint and the training step draws from.
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=VideoTextCollate(),
                        pin_memory=pin_memory, prefetch_factor=2 if num_workers else None,
                        worker_init_fn=decode_in_one_thread, generator=torch.Generator().manual_seed(sampler.seed))
    micro_batches = iter(loader)
    try:
        for _ in range(sampler.start, sampler.end):
            yield [next(micro_batches) for _ in range(sampler.grad_accum)]
    finally:
        del micro_batches  # shuts the worker processes down now, not at garbage collection
