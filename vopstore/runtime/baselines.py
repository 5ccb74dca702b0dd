"""Baseline rows in a mixed batch: one forward for every per-row baseline, one per own model.

What a batch runs, family by family (rows scattered back in order by the caller):

* prompt rows and plain rows: the prompt forward, as before (text: one forward per prompt
  shape; video: one per (method, config) group; plain rows: the zero-prompt forward);
* per-row baselines (bias, proj, adapter-attn, adapter-ffn, any versions and configs):
  ONE forward for all their rows (:func:`vopstore.baselines.rows.mixed_overrides`): a
  gathered per-row add for biases, one matmul per proj set present, each adapter group's
  branch added to its own rows only;
* own models (partial, full): one forward per loaded version, the backbone's parameters
  with that version's tensors in their place.

Why not one forward for the whole batch: a prompt row carries extra tokens (text prompts
inserted at every layer, visual prompts per frame, VoP^F's attention across frames) and a
baseline row none, so a shared forward needs per-row padding and attention masks inside the
prompt methods' forward, and that forward runs the backbone's own modules (its last layer
computes only the pooled rows) while a baseline row needs weights replaced per row. One
forward per family costs one extra launch per family present (at most two more than a
prompt-only batch) and keeps every row equal to it served alone; bench/bench_runtime_baselines.py
measures it against one forward per task.

Nothing here writes to the backbone: the forwards read its parameters and put the
baselines' tensors beside them.
"""

from __future__ import annotations

from typing import Any

import torch

from vopstore.baselines.configs import OWN_MODEL, PER_ROW
from vopstore.baselines.forward import Overrides, frame_features, text_features
from vopstore.baselines.rows import RowGroup, mixed_overrides
from vopstore.prompts.forward import pool_frames
from vopstore.runtime.bank import PROMPTS, Bank, family

Groups = dict  # {group key or None: (row numbers, slots)}, as encode.group_rows gives


def split(bank: Bank, groups: Groups) -> tuple[Groups, Groups, Groups]:
    """(prompt groups with the plain rows, per-row baseline groups, own models) of ``groups``."""
    parts: dict[str, Groups] = {PROMPTS: {}, PER_ROW: {}, OWN_MODEL: {}}
    for key, value in groups.items():
        parts[PROMPTS if key is None else family(bank.groups[key].method_cls)][key] = value
    return parts[PROMPTS], parts[PER_ROW], parts[OWN_MODEL]


def encode_text(backbone: Any, bank: Bank, texts: list[str], per_row: Groups,
                models: Groups) -> list[tuple[list[int], torch.Tensor]]:
    """[(rows, their (len(rows), D) text embeddings)] for the baseline rows."""
    return [(rows, text_features(backbone, backbone.tokenize([texts[r] for r in rows]), overrides))
            for rows, overrides in _forwards(backbone, bank, per_row, models)]


def encode_video(backbone: Any, bank: Bank, pixels: torch.Tensor, per_row: Groups, models: Groups,
                 normalize: bool) -> list[tuple[list[int], torch.Tensor]]:
    """[(rows, their (len(rows), D) video embeddings)] for the baseline rows of (B, F, 3, H, W) ``pixels``."""
    out = []
    for rows, overrides in _forwards(backbone, bank, per_row, models):
        chunk = pixels if len(rows) == pixels.shape[0] else pixels[torch.tensor(rows, device=pixels.device)]
        out.append((rows, pool_frames(frame_features(backbone, chunk, overrides), normalize)))
    return out


def _forwards(backbone: Any, bank: Bank, per_row: Groups, models: Groups) -> list[tuple[list[int], Overrides]]:
    """One (rows, overrides) per forward: all per-row baseline rows together, then each own model."""
    forwards = []
    if per_row:
        rows, groups = [], []
        for key, (members, slots) in per_row.items():
            view = bank.groups[key]
            groups.append(RowGroup(view.method_cls, view.config, view.tensors,
                                   range(len(rows), len(rows) + len(members)), slots))
            rows += members
        forwards.append((rows, mixed_overrides(backbone.model, groups, len(rows))))
    for key, (rows, _) in models.items():
        view = bank.groups[key]
        forwards.append((rows, view.method_cls.overrides(view.config, {n: t[0] for n, t in view.tensors.items()})))
    return forwards
