"""CLIP preprocessing of a clip's frames in plain torch (torchvision does not import here).

The transforms of the X-Pool code VoP was trained with. Eval (its ``clip_test``): resize
the shorter side to R (the backbone's ``resize_size``, bicubic, antialiased), center-crop
S x S (``image_size``), normalise: the same functions serving uses (:mod:`vopstore.video`).
Train (its ``clip_train``): RandomResizedCrop(S, scale=(0.5, 1.0)) + horizontal flip, the
SAME crop and flip for every frame of the clip, then normalise. Flip is optional: it swaps left and right, so a task
whose captions say "left"/"right" (the synthetic task) must turn it off.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vopstore.errors import ConfigError
from vopstore.video import center_crop, resize_shorter  # the eval transform serving uses too

SCALE = (0.5, 1.0)
RATIO = (3 / 4, 4 / 3)


def preprocess_frames(frames: np.ndarray, image_size: int, mean: Sequence[float], std: Sequence[float],
                      train: bool = False, rng: np.random.Generator | None = None,
                      flip: bool = True, resize_size: int | None = None) -> torch.Tensor:
    """Turn (F, H, W, 3) uint8 frames into the (F, 3, S, S) float tensor CLIP expects.

    Args:
        frames: RGB frames of one clip.
        image_size: S, the backbone's input side (``Backbone.image_size``).
        mean, std: the backbone's normalisation (``Backbone.image_mean``/``image_std``).
        train: random resized crop (+ flip) instead of resize + center crop.
        rng: the randomness of the crop and flip (seed it for reproducible batches).
        flip: in training, flip horizontally with probability 0.5.
        resize_size: R, the eval resize of the shorter side (``Backbone.resize_size``);
            None: ``image_size``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(f"expected (F, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        x = random_resized_crop(x, image_size, rng)  # crops the uint8 frames before the float copy
        if flip and rng.random() < 0.5:
            x = x.flip(-1)
    else:
        x = center_crop(resize_shorter(x.float().div_(255), resize_size or image_size), image_size)
    return normalize_(x.clamp_(0, 1), mean, std)


def crop_box(h: int, w: int, rng: np.random.Generator, scale=SCALE, ratio=RATIO) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (top, left, height, width), 10 tries then a center crop."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def random_resized_crop(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """One random box for the whole clip, resized to ``size`` x ``size`` (bilinear, antialiased)."""
    top, left, ch, cw = crop_box(x.shape[-2], x.shape[-1], rng)
    crop = x[..., top:top + ch, left:left + cw]
    crop = crop.float().div_(255) if not crop.is_floating_point() else crop
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def normalize_(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """CLIP normalisation of a (F, 3, H, W) float tensor, in place (the torch ``_`` convention)."""
    m = torch.as_tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)
