"""Mixed-task forwards over one bank snapshot, in both towers.

Rows are grouped, run, and scattered back in row order:

* text: every method has the same deep text prompts, so rows of *different
  methods* whose text prompts have the same shape and layout run in ONE text
  forward (each row's prompts gathered from its own group's storage); with
  precomputed keys and values, rows whose prompt count matches share a forward
  whatever their depth;
* video: one forward per (method, config) group, each with a per-row slot index
  (generated prompts, vop-c / vop-f+c, run their BiLSTM once per task inside it),
  cached prompt keys and values attached;
* rows without a task run plain CLIP (the zero-prompt forward);
* baseline rows: one forward for every bias, proj and adapter row, one per own model
  (partial, full); see :mod:`vopstore.runtime.baselines` for why not one forward in all.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from vopstore.runtime import baselines, precompute
from vopstore.runtime.bank import Bank, Entry, GroupKey

PLAIN = None  # the group of rows that name no task


def group_rows(entries: Sequence[Entry | None]) -> dict[GroupKey | None, tuple[list[int], list[int]]]:
    """{group: (row numbers, slots)} in first-seen order; rows without a task go to ``PLAIN``."""
    groups: dict[GroupKey | None, tuple[list[int], list[int]]] = {}
    for row, entry in enumerate(entries):
        key = PLAIN if entry is None else entry.group
        rows, slots = groups.setdefault(key, ([], []))
        rows.append(row)
        slots.append(0 if entry is None else entry.slot)
    return groups


def scatter(parts: list[tuple[list[int], torch.Tensor]], batch: int) -> torch.Tensor:
    """Rows' values back in row order: ``parts`` is [(row numbers, (len(rows), ...) values)]."""
    if len(parts) == 1 and parts[0][0] == list(range(batch)):
        return parts[0][1]  # one group already in row order (a merged text group need not be: check)
    first = parts[0][1]
    out = first.new_empty((batch, *first.shape[1:]))
    for rows, values in parts:
        out[torch.tensor(rows, device=out.device)] = values
    return out


def _index(slots: list[int], device: Any) -> torch.Tensor:
    return torch.tensor(slots, dtype=torch.long, device=device)


# --- text --------------------------------------------------------------------------------------------------------


def encode_text(backbone: Any, bank: Bank, texts: list[str], entries: Sequence[Entry | None]) -> torch.Tensor:
    """(B, D) projected text embeddings, row b with the prompts of ``entries[b]`` (None: plain CLIP)."""
    from vopstore.prompts.forward import text_forward

    prompt_groups, per_row, models = baselines.split(bank, group_rows(entries))
    parts = baselines.encode_text(backbone, bank, texts, per_row, models)
    for rows, prompts in _text_groups(bank, prompt_groups):
        n = 0 if prompts is None else prompts.n_prompts
        ids = backbone.tokenize([texts[r] for r in rows], n)
        parts.append((rows, text_forward(backbone, ids, prompts)))
    return scatter(parts, len(texts))


def _text_groups(bank: Bank, groups: dict) -> list[tuple[list[int], Any]]:
    """Merge method groups whose text prompts share (depth, tokens, layout) into one forward each
    (with cached keys and values: the same number of tokens)."""
    merged: dict[Any, list[tuple[list[int], Any]]] = {}
    for key, (rows, slots) in groups.items():
        if key is PLAIN:
            merged.setdefault(PLAIN, []).append((rows, None))
            continue
        view = bank.groups[key]
        prompts = precompute.text_prompts(view, _index(slots, view.tensors["text"].device))
        if prompts.cache is not None:
            shape = ("cached", tuple(prompts.cache[0].shape[1:]))
        else:
            shape = (tuple(prompts.prompts.shape[1:]), prompts.layout)
        merged.setdefault(shape, []).append((rows, prompts))
    out = []
    for shape, members in merged.items():
        rows = [r for member_rows, _ in members for r in member_rows]
        out.append((rows, None if shape is PLAIN else _stacked([p for _, p in members])))
    return out


def _stacked(members: list) -> Any:
    """One TextPrompts holding the rows of several groups' (same shape), in order."""
    from vopstore.prompts.forward import TextPrompts

    if len(members) == 1:
        return members[0]
    first = members[0]
    if first.cache is not None:
        cache = tuple(torch.cat([p.cache[part] for p in members]) for part in (0, 1))
        return TextPrompts(prompts=None, layout=first.layout, cache=cache)
    return TextPrompts(prompts=torch.cat([p.prompts for p in members]), layout=first.layout)


# --- video -------------------------------------------------------------------------------------------------------


def encode_video(backbone: Any, bank: Bank, pixels: torch.Tensor, entries: Sequence[Entry | None],
                 normalize: bool = False) -> torch.Tensor:
    """(B, D) video embeddings from (B, F, 3, H, W) pixel values, video b with ``entries[b]``'s prompts."""
    from vopstore.prompts.forward import encode_video as plain_video
    from vopstore.prompts.forward import frames_forward, pool_frames

    batch = pixels.shape[0]
    prompt_groups, per_row, models = baselines.split(bank, group_rows(entries))
    parts = baselines.encode_video(backbone, bank, pixels, per_row, models, normalize)
    for key, (rows, slots) in prompt_groups.items():
        chunk = pixels if len(rows) == batch else pixels[torch.tensor(rows, device=pixels.device)]
        if key is PLAIN:
            parts.append((rows, plain_video(backbone, chunk, None, normalize)))
            continue
        view = bank.groups[key]
        index = _index(slots, next(iter(view.tensors.values())).device)
        prompts = precompute.video_prompts(view, index, chunk.shape[1])
        parts.append((rows, pool_frames(frames_forward(backbone, chunk, prompts), normalize)))
    return scatter(parts, batch)
