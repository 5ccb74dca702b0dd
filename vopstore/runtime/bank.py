"""The bank: loaded prompt sets stacked per (method, config), so a swap is an index change.

Baselines live here too, in one of two ways (see :func:`family`): bias, proj and adapter
versions are stacked per (method, config) exactly like prompt sets (their rows run with
per-row weights on the shared backbone); a partial or full fine-tune is an *own model*: its
tensors are held as loaded, in a group of its own with one slot and no spare capacity (a
full fine-tune is never copied into a grown storage).

Two layers:

* :class:`GroupStorage` (mutable, touched only under the retriever's write lock):
  one tensor per prompt name with a leading **slot** dimension and spare capacity.
  A new prompt set is written into a free slot; when none is free the storage
  doubles into a NEW tensor (old snapshots keep the old one).
* :class:`Bank` (immutable snapshot): task -> (group, slot) plus each group's
  storage tensors as they were when the snapshot was built. Requests take the
  current bank by reading one attribute, without a lock, and use only its rows.

Copy-on-write without copying every load: a slot is written only while no live
bank maps any task to it. An evicted slot is *retired* with the generation of
the last bank that used it and becomes free once every bank of that generation
or older has been garbage-collected (banks are tracked in a ``WeakSet``), so a
request holding an old snapshot keeps reading intact prompts even while other
threads load and evict. A group no task uses any more loses its storage at
once: the snapshots that still read it keep its tensors alive, nobody else does.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import torch

from vopstore.baselines.configs import BASELINES, OWN_MODEL
from vopstore.core import canonical_json

# (method name, canonical JSON of its config[, names of its cached tensors]), or (method name, OWN + task)
GroupKey = tuple[str, ...]
CACHE = "cache:"  # storage names of the precomputed keys and values (no prompt tensor name has a colon)
OWN = "own model:"  # an own model's group key (no canonical JSON starts with it)
PROMPTS = "prompts"


def group_key(method: str, config: Any) -> GroupKey:
    """The stacking key: sets of one method with one config share a storage."""
    return method, canonical_json(config.to_dict())


def storage_key(prepared: Any) -> GroupKey:
    """The storage a prepared set's slot goes to: its group's, apart from sets of the group holding
    other cached tensors (a set whose keys and values are still computed in the background)."""
    key = group_key(prepared.method_cls.name, prepared.config)
    return (*key, ",".join(sorted(prepared.cache))) if prepared.cache else key


def family(method_cls: Any) -> str:
    """How a method's versions are served: ``PROMPTS`` (a VoP prompt set), ``PER_ROW`` (bias, proj,
    adapters: stacked, per-row weights on the shared backbone) or ``OWN_MODEL`` (partial, full)."""
    found = BASELINES.get(method_cls.name)
    return PROMPTS if found is None else found[1]


@dataclass(frozen=True)
class Entry:
    """One loaded task in a bank snapshot.

    Attributes:
        task: ``tenant/task``, the key requests name.
        ref: the ref ``load`` was given (``refresh`` resolves it again).
        info: the exact version loaded (a ``VersionInfo``).
        group: the storage it lives in; slot: its row there.
        nbytes: bytes of its tensors (prompts, a baseline's, an own model's) and their cache
            (what ``max_bytes`` counts).
        cache_bytes: the part of ``nbytes`` that is precomputed keys and values.
    """

    task: str
    ref: str
    info: Any
    group: GroupKey
    slot: int
    nbytes: int
    cache_bytes: int = 0


@dataclass(frozen=True)
class GroupView:
    """A group's stacked tensors as one snapshot sees them: {name: (capacity, *shape)}.

    ``tensors`` are the prompt sets' own; ``cache`` their precomputed keys and values
    (see :mod:`vopstore.runtime.precompute`; empty when the retriever does not precompute).
    """

    method_cls: Any
    config: Any
    tensors: Mapping[str, torch.Tensor]
    cache: Mapping[str, torch.Tensor] = field(default_factory=lambda: MappingProxyType({}))


class Bank:
    """An immutable snapshot of what is loaded; build new ones, never change one."""

    __slots__ = ("generation", "entries", "groups", "__weakref__")

    def __init__(self, generation: int, entries: dict[str, Entry], groups: dict[GroupKey, GroupView]) -> None:
        self.generation = generation
        self.entries: Mapping[str, Entry] = MappingProxyType(dict(entries))
        self.groups: Mapping[GroupKey, GroupView] = MappingProxyType(dict(groups))

    @property
    def nbytes(self) -> int:
        """Prompt and cache bytes of the loaded tasks (not counting spare slots)."""
        return sum(e.nbytes for e in self.entries.values())


class GroupStorage:
    """The mutable slot storage of one (method, config) group.

    ``tensors`` holds every stacked tensor of the group: the prompts' under their own
    names, the cache's under ``CACHE + name``, so that both grow and fill together.
    """

    def __init__(self, method_cls: Any, config: Any, like: Mapping[str, torch.Tensor]) -> None:
        self.method_cls, self.config = method_cls, config
        self.tensors = {name: t.new_empty((0, *t.shape)) for name, t in like.items()}
        self.free: list[int] = []
        self.retired: list[tuple[int, int]] = []  # (slot, generation of the last bank that used it)

    @property
    def capacity(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def view(self) -> GroupView:
        prompts = {name: t for name, t in self.tensors.items() if not name.startswith(CACHE)}
        cache = {name.removeprefix(CACHE): t for name, t in self.tensors.items() if name.startswith(CACHE)}
        return GroupView(self.method_cls, self.config, MappingProxyType(prompts), MappingProxyType(cache))

    def retire(self, slot: int, generation: int) -> None:
        self.retired.append((slot, generation))

    def reclaim(self, oldest_live: int) -> None:
        """Free the retired slots that no live bank can still read."""
        keep = [(s, g) for s, g in self.retired if g >= oldest_live]
        self.free += [s for s, g in self.retired if g < oldest_live]
        self.retired = keep

    def plan_slots(self, count: int) -> tuple[list[int], dict[str, torch.Tensor], list[int]]:
        """(slots for ``count`` new sets, the storage to write them into, its new spare slots).

        Grows into new tensors when too few slots are free. Nothing here changes
        ``self``: :meth:`commit` does, once every allocation has succeeded.
        """
        slots = self.free[:count]
        missing = count - len(slots)
        if missing <= 0:
            return slots, self.tensors, []
        old = self.capacity
        new = max(2 * old, old + missing)
        tensors = {name: _grown(t, new) for name, t in self.tensors.items()}
        return slots + list(range(old, old + missing)), tensors, list(range(old + missing, new))

    def commit(self, slots: list[int], tensors: dict[str, torch.Tensor], spare: list[int]) -> None:
        taken = set(slots)
        self.free = [s for s in self.free if s not in taken] + spare
        self.tensors = tensors


def _grown(tensor: torch.Tensor, capacity: int) -> torch.Tensor:
    out = tensor.new_zeros((capacity, *tensor.shape[1:]))
    out[: tensor.shape[0]].copy_(tensor)
    return out


class BankBuilder:
    """Builds successive :class:`Bank` generations; call only under the owner's write lock."""

    def __init__(self) -> None:
        self.storages: dict[GroupKey, GroupStorage] = {}
        self.models: dict[GroupKey, GroupView] = {}  # own models (partial, full): one version each
        self.live: weakref.WeakSet[Bank] = weakref.WeakSet()
        self.generation = 0

    def oldest_live(self) -> int:
        generations = [bank.generation for bank in list(self.live)]
        return min(generations, default=self.generation + 1)

    def build(self, current: Bank, add: list, remove: list[str]) -> Bank:
        """A new bank: ``current`` minus the ``remove`` tasks, plus the ``add`` prepared sets.

        ``add`` items have ``task``, ``ref``, ``info``, ``method_cls``, ``config``,
        ``tensors``, ``cache``, ``nbytes`` and ``cache_bytes``; a task in ``add`` that is
        already loaded is replaced.
        """
        add = list({p.task: p for p in add}.values())  # one slot per task, the last request wins
        entries = dict(current.entries)
        dropped = [entries.pop(task) for task in set(remove) | {p.task for p in add} if task in entries]
        own = [p for p in add if family(p.method_cls) == OWN_MODEL]
        written = self._write([p for p in add if family(p.method_cls) != OWN_MODEL]) + self._place_models(own)
        for entry in dropped:
            storage = self.storages.get(entry.group)  # an own model has no slots to retire
            if storage is not None:
                storage.retire(entry.slot, current.generation)
        entries.update({e.task: e for e in written})
        self.generation += 1
        used = {e.group for e in entries.values()}
        self._prune(used)
        views = {**{k: s.view() for k, s in self.storages.items() if k in used}, **self.models}
        bank = Bank(self.generation, entries, views)
        self.live.add(bank)
        return bank

    def _prune(self, used: set) -> None:
        """Drop the storage of each group no task uses any more.

        Safe with snapshots in flight: a snapshot holds its own :class:`GroupView`
        tensors (so they live until its last reader is done), and a group loaded
        again gets a fresh storage, never writing into tensors a snapshot reads.
        """
        for key in [k for k in self.storages if k not in used]:
            del self.storages[key]
        for key in [k for k in self.models if k not in used]:
            del self.models[key]

    def _place_models(self, add: list) -> list[Entry]:
        """Own models keep the tensors they were loaded with (a leading slot dimension of 1 is a view)."""
        entries = []
        for prepared in add:
            key = (prepared.method_cls.name, OWN + prepared.task)
            tensors = MappingProxyType({name: t.unsqueeze(0) for name, t in prepared.tensors.items()})
            self.models[key] = GroupView(prepared.method_cls, prepared.config, tensors)
            entries.append(Entry(prepared.task, prepared.ref, prepared.info, key, 0, prepared.nbytes))
        return entries

    def _write(self, add: list) -> list[Entry]:
        """Place the prepared sets in free slots; all allocation happens before any state changes."""
        oldest = self.oldest_live()
        by_group: dict[GroupKey, list] = {}
        for prepared in add:
            by_group.setdefault(storage_key(prepared), []).append(prepared)
        plans = {}
        for key, items in by_group.items():
            storage = self.storages.get(key) or GroupStorage(items[0].method_cls, items[0].config, _stored(items[0]))
            storage.reclaim(oldest)
            plans[key] = (storage, *storage.plan_slots(len(items)))
        entries = []
        for key, (storage, slots, tensors, spare) in plans.items():
            for slot, prepared in zip(slots, by_group[key]):
                stored = _stored(prepared)
                for name, tensor in tensors.items():
                    tensor[slot].copy_(stored[name])
                entries.append(Entry(prepared.task, prepared.ref, prepared.info, key, slot, prepared.nbytes,
                                     prepared.cache_bytes))
            storage.commit(slots, tensors, spare)
            self.storages[key] = storage
        return entries


def _stored(prepared: Any) -> dict[str, torch.Tensor]:
    """What a prepared set puts in its slot: its prompt tensors and its cache (under ``CACHE``)."""
    return {**prepared.tensors, **{CACHE + name: t for name, t in prepared.cache.items()}}
