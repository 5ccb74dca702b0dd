"""Mixed-version batches of the co-batchable baselines (bias, proj, adapters) on the shared backbone.

The same bank contract as vopstore.prompts: versions of ONE baseline and ONE config
are stacked along a leading set dimension (:func:`~vopstore.baselines.registry.stack_baselines`),
and row b of a batch uses set ``set_index[b]``. :func:`mixed_overrides` goes further: rows of
several such stacks (bias, proj and adapter versions together) and plain rows in ONE forward.
Nothing of the backbone is modified, so rows of prompt sets (or of the plain backbone) can run
beside these in the same process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from vopstore.baselines.base import Baseline, as_video
from vopstore.baselines.forward import AdapterRows, Overrides, Rows, frame_features, text_features
from vopstore.errors import ConfigError
from vopstore.prompts.forward import pool_frames


def row_overrides(method_cls: type[Baseline], config: Any, stacked: Mapping[str, torch.Tensor],
                  set_index: torch.Tensor) -> Overrides:
    """The forward's overrides for a batch whose row b uses set ``set_index[b]`` of ``stacked`` (S, ...)."""
    if not method_cls.co_batched():
        raise ConfigError(f"{method_cls.name} replaces weights that every row goes through; serve it as its own "
                          "model, not per row")
    overrides = method_cls.overrides(config, stacked)
    overrides.rows = Rows(set_index)
    return overrides


@dataclass(frozen=True)
class RowGroup:
    """The rows of a batch that use versions of one co-batchable baseline and config.

    Attributes:
        method_cls, config: the baseline and its settings.
        stacked: its versions' tensors {file name: (S, ...)} (a bank group's storage).
        members: the batch rows that use it; sets: the set of ``stacked`` each member uses.
    """

    method_cls: type[Baseline]
    config: Any
    stacked: Mapping[str, torch.Tensor]
    members: Sequence[int]
    sets: Sequence[int]


def mixed_overrides(model: Any, groups: Sequence[RowGroup], batch: int) -> Overrides:
    """One forward's overrides for a batch of ``batch`` rows mixing versions of several co-batchable baselines.

    Row ``groups[g].members[i]`` uses set ``groups[g].sets[i]`` of group g; a row in no group runs
    the plain backbone. A replaced weight is stacked over the backbone's own tensor (set 0: the rows
    whose baseline leaves it alone) and the sets present of the groups that replace it, with its own
    per-row index (``param_rows``); each adapter group adds its branch to its member rows only. So a
    bias row pays a gathered add, a proj row one matmul per proj set present, and nothing is copied
    of a group's storage but the sets the batch uses.
    """
    own = dict(model.named_parameters())
    replaced: dict[str, list[tuple[int, torch.Tensor]]] = {}  # name -> [(group number, its stacked tensor)]
    adapters = []
    for number, group in enumerate(groups):
        overrides = row_overrides(group.method_cls, group.config, group.stacked, _longs(group.sets, group.stacked))
        for name, stacked in overrides.params.items():
            replaced.setdefault(name, []).append((number, stacked))
        if overrides.adapters:
            adapters.append(AdapterRows(overrides.adapters, overrides.position, overrides.scale,
                                        _longs(group.members, group.stacked), overrides.rows, batch))
    present = [sorted(set(group.sets)) for group in groups]
    params, param_rows, rows_of = {}, {}, {}
    for name, by_group in replaced.items():
        numbers = tuple(number for number, _ in by_group)
        if numbers not in rows_of:  # names replaced by the same groups share one index
            rows_of[numbers] = Rows(_index(groups, present, numbers, batch, own[name].device))
        params[name] = torch.cat([own[name].unsqueeze(0).to(by_group[0][1].dtype),
                                  *(stacked[_longs(present[n], stacked)] for n, stacked in by_group)])
        param_rows[name] = rows_of[numbers]
    return Overrides(params=params, param_rows=param_rows, adapter_rows=adapters)


def _index(groups: Sequence[RowGroup], present: list[list[int]], numbers: tuple[int, ...], batch: int,
           device: Any) -> torch.Tensor:
    """Each row's set in [backbone, group numbers[0]'s present sets, numbers[1]'s, ...]."""
    index = [0] * batch
    offset = 1
    for number in numbers:
        position = {s: offset + i for i, s in enumerate(present[number])}
        for row, s in zip(groups[number].members, groups[number].sets):
            index[row] = position[s]
        offset += len(present[number])
    return torch.tensor(index, dtype=torch.long, device=device)


def _longs(values: Sequence[int], like: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
    tensor = like if isinstance(like, torch.Tensor) else next(iter(like.values()))
    return torch.tensor(list(values), dtype=torch.long, device=tensor.device)


def encode_text_rows(backbone: Any, input_ids: torch.Tensor, method_cls: type[Baseline], config: Any,
                     stacked: Mapping[str, torch.Tensor], set_index: torch.Tensor) -> torch.Tensor:
    """Text embeddings (B, D), NOT normalised, where row b uses set ``set_index[b]``."""
    return text_features(backbone, input_ids, row_overrides(method_cls, config, stacked, set_index))


def encode_frames_rows(backbone: Any, pixel_values: torch.Tensor, method_cls: type[Baseline], config: Any,
                       stacked: Mapping[str, torch.Tensor], set_index: torch.Tensor) -> torch.Tensor:
    """Per-frame embeddings (B, F, D), NOT normalised, where video b uses set ``set_index[b]``."""
    return frame_features(backbone, as_video(pixel_values), row_overrides(method_cls, config, stacked, set_index))


def encode_video_rows(backbone: Any, pixel_values: torch.Tensor, method_cls: type[Baseline], config: Any,
                      stacked: Mapping[str, torch.Tensor], set_index: torch.Tensor,
                      normalize: bool = False) -> torch.Tensor:
    """Video embeddings (B, D): the mean of the L2-normalised frame embeddings, video b with set ``set_index[b]``."""
    frames = encode_frames_rows(backbone, pixel_values, method_cls, config, stacked, set_index)
    return pool_frames(frames, normalize)
