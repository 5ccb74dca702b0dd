"""The torch Dataset of (pixel_values, caption, index) and its tokenizing collate.

Randomness (training crop, flip, ``random`` frame offsets) comes from a generator
seeded by (seed, epoch, index), so a batch is reproducible whatever the worker
count. An item is asked for by index (drawn for the epoch of
:meth:`VideoTextDataset.set_epoch`) or by an ``(epoch, index)`` pair, the form
the training sampler yields: DataLoader workers then need no epoch state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from vopstore.errors import ConfigError, DataError
from vopstore.trainer.data.cache import FrameCache
from vopstore.trainer.data.frames import check_sampling, load_candidates, load_frames
from vopstore.trainer.data.sample import Sample, Skipped, check_on_error
from vopstore.trainer.data.transforms import preprocess_frames

log = logging.getLogger("vopstore.trainer.data")


class VideoTextDataset(Dataset):
    """Clips as (F, 3, S, S) float tensors with their captions.

    Args:
        samples: from :func:`read_split` (or any list of :class:`Sample`).
        num_frames: F, frames per clip.
        image_size, mean, std: the backbone's preprocessing (``Backbone.image_size`` ...).
        train: frames by ``sampling`` + random resized crop (+ flip); else uniform frames + center crop.
        cache_dir: keep decoded frames there (see :mod:`.cache` for the training trade-off).
        on_error: ``"skip"``: an undecodable video is logged, recorded in :attr:`skipped`
            (per process) and replaced by the next decodable sample; ``"raise"``: DataError.
        flip: horizontal flip in training (turn off for captions that say left/right).
        seed: base seed of the per-item generators.
        sampling: the training frames: ``uniform`` (the paper's; the middle of each range)
            or ``random`` (a random frame in each range). Evaluation is always uniform.
        cache_candidates: frames cached per range for ``random`` training (the jitter they allow).
        short_side: resize while decoding (smaller cache files); None keeps the video's size.
        resize_size: eval resize of the shorter side before the center crop
            (``Backbone.resize_size``, as serving does); None: ``image_size``.
    """

    def __init__(self, samples: Sequence[Sample], num_frames: int, image_size: int, mean: Sequence[float],
                 std: Sequence[float], train: bool, cache_dir: Path | str | None = None,
                 on_error: str = "skip", flip: bool = True, seed: int = 0, cache_candidates: int = 4,
                 short_side: int | None = None, resize_size: int | None = None, sampling: str = "uniform"):
        check_on_error(on_error)
        if not samples or num_frames < 1 or image_size < 1 or cache_candidates < 1:
            raise ConfigError(f"need samples and num_frames, image_size, cache_candidates >= 1; got "
                              f"{len(samples)} samples, {num_frames}, {image_size}, {cache_candidates}")
        self.samples = list(samples)
        self.num_frames, self.image_size = num_frames, image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.train, self.flip, self.seed, self.epoch = train, flip, seed, 0
        self.sampling = check_sampling(sampling) if train else "uniform"
        self.on_error = on_error
        self.cache = FrameCache(cache_dir) if cache_dir is not None else None
        self.cache_candidates, self.short_side, self.resize_size = cache_candidates, short_side, resize_size
        self.skipped: list[Skipped] = []

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """New random draws for a new epoch (set before creating the DataLoader iterator)."""
        self.epoch = epoch

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, str, int]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        for attempt in range(len(self.samples)):
            i = (index + attempt) % len(self.samples)
            try:
                return self._item(i, epoch), self.samples[i].caption, i
            except DataError as exc:
                if self.on_error == "raise":
                    raise
                log.warning("skipping sample %d: %s", i, exc)
                self.skipped.append(Skipped(str(self.samples[i].video_path), None, str(exc)))
        raise DataError(f"no sample of this dataset could be decoded ({len(self.skipped)} failures); "
                        "check the video files")

    def _item(self, i: int, epoch: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, epoch, i))
        frames = self.frames(i, rng)
        return preprocess_frames(frames, self.image_size, self.mean, self.std, self.train, rng, self.flip,
                                 self.resize_size)

    def frames(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """The (F, H, W, 3) uint8 frames of sample ``i``, through the cache when there is one."""
        sample, f, short = self.samples[i], self.num_frames, self.short_side
        path, end_s = sample.video_path, sample.end_s
        if self.cache is None:
            return load_frames(path, f, self.sampling, rng, short, end_s)
        if self.sampling == "uniform":  # deterministic: cache exactly the frames
            key = self.cache.key(path, f=f, mode="uniform-xpool", short=short, end=end_s)
            return self.cache.get_or_load(key, lambda: load_frames(path, f, "uniform", None, short, end_s))
        c = self.cache_candidates
        key = self.cache.key(path, f=f, mode="candidates-xpool", c=c, short=short, end=end_s)
        cand = self.cache.get_or_load(key, lambda: load_candidates(path, f, c, short, end_s))
        return cand[np.arange(f), rng.integers(0, c, size=f)]


class VideoTextCollate:
    """Batch items: stack pixels, tokenize captions with the passed-in callable.

    ``tokenize(list[str]) -> dict[str, Tensor]`` (e.g. a HF tokenizer with padding and
    truncation). A class, not a closure, so DataLoader workers can pickle it.
    """

    def __init__(self, tokenize: Callable[[list[str]], dict] | None = None):
        self.tokenize = tokenize

    def __call__(self, items: list[tuple[torch.Tensor, str, int]]) -> dict:
        pixels, captions, index = zip(*items)
        # default_collate stacks straight into shared memory in a DataLoader worker (no extra copy to send it)
        batch = {"pixel_values": default_collate(list(pixels)), "captions": list(captions),
                 "index": torch.tensor(index, dtype=torch.long)}
        if self.tokenize is not None:
            batch["text"] = self.tokenize(list(captions))
        return batch
