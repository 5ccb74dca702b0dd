"""An immutable view of what a :class:`~vopstore.runtime.retriever.Retriever` had loaded at one instant."""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from vopstore.errors import ConfigError, NotFoundError
from vopstore.runtime import encode
from vopstore.runtime.bank import Bank, Entry

if TYPE_CHECKING:
    from vopstore.runtime.retriever import Retriever


class Snapshot:
    """An immutable view of what was loaded at one instant; every encode on it uses exactly that."""

    def __init__(self, retriever: Retriever, bank: Bank) -> None:
        self._retriever, self.bank = retriever, bank
        self.backbone = retriever.backbone

    @property
    def loaded(self) -> Mapping[str, Any]:
        """task (``tenant/task``) -> the exact ``VersionInfo`` loaded."""
        return MappingProxyType({task: e.info for task, e in self.bank.entries.items()})

    def entry(self, task: str) -> Entry:
        """The loaded entry of ``task`` (``tenant/task``, or a bare name in the default tenant): its exact
        ``info`` (VersionInfo), bank group and slot. Raises NotFoundError if it is not loaded here."""
        entry = self._lookup(task)
        if entry is None:
            raise NotFoundError("a task name is needed (None means plain CLIP, which has no entry)")
        return entry

    def search(self, texts: str | Sequence[str], task: str | None = None, *,
               tasks: Sequence[str | None] | None = None, gallery: str, k: int = 10, galleries: Any = None,
               build_missing: bool = False) -> list[list[tuple[str, float]]]:
        """See :meth:`Retriever.search`; every step uses this snapshot."""
        from vopstore.gallery import Galleries

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        queries = self.encode_text(texts, task, tasks=tasks, normalize=True)
        rows = list(tasks) if tasks is not None else [task] * len(texts)
        store = galleries if galleries is not None else self._retriever.galleries
        if not isinstance(store, Galleries):
            store = Galleries(store)
        if build_missing:
            missing = [t for t in dict.fromkeys(rows) if not store.has_index(self, gallery, t)]
            if missing:
                store.build_many(self, gallery, missing, progress=False)
        return store.search(self, queries, rows, gallery, k=k)

    def encode_text(self, texts: str | Sequence[str], task: str | None = None, *,
                    tasks: Sequence[str | None] | None = None, normalize: bool = False) -> torch.Tensor:
        """See :meth:`Retriever.encode_text`."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        entries = self._entries(task, tasks, len(texts))
        with torch.inference_mode():
            out = encode.encode_text(self.backbone, self.bank, texts, entries)
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_video(self, videos: torch.Tensor | Sequence[str | os.PathLike], task: str | None = None, *,
                     tasks: Sequence[str | None] | None = None, normalize: bool = False,
                     num_frames: int | None = None) -> torch.Tensor:
        """See :meth:`Retriever.encode_video`."""
        if isinstance(videos, torch.Tensor):
            pixels = _pixels(videos)
            entries = self._entries(task, tasks, pixels.shape[0])
            with torch.inference_mode():
                return encode.encode_video(self.backbone, self.bank, pixels, entries, normalize)
        from vopstore.video import load_videos

        paths = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
        if not paths:
            raise ConfigError("encode_video needs at least one video file or a (B, F, 3, H, W) tensor")
        entries = self._entries(task, tasks, len(paths))
        by_frames: dict[int, list[int]] = {}  # decode each row with its task's frame count
        for row, entry in enumerate(entries):
            by_frames.setdefault(num_frames or task_frames(entry, self.bank), []).append(row)
        parts = []
        for frames, rows in by_frames.items():
            pixels = load_videos([paths[r] for r in rows], self.backbone, frames)
            with torch.inference_mode():
                parts.append((rows, encode.encode_video(self.backbone, self.bank, pixels, [entries[r] for r in rows],
                                                        normalize)))
        return encode.scatter(parts, len(paths))

    def _entries(self, task: str | None, tasks: Sequence[str | None] | None, batch: int) -> list[Entry | None]:
        if task is not None and tasks is not None:
            raise ConfigError("pass either task= (one task for every row) or tasks= (one per row), not both")
        if tasks is None:
            tasks = [task] * batch
        elif len(tasks) != batch:
            raise ConfigError(f"tasks= names {len(tasks)} tasks for {batch} rows; give one task (or None) per row")
        found = {name: self._lookup(name) for name in set(tasks)}
        self._retriever._touch(e.task for e in found.values() if e is not None)
        return [found[name] for name in tasks]

    def _lookup(self, name: str | None) -> Entry | None:
        if name is None:
            return None
        entry = self.bank.entries.get(name)
        if entry is None:
            entry = self.bank.entries.get(self._retriever._task_key(name))
        if entry is None:
            loaded = ", ".join(sorted(self.bank.entries)) or "none"
            raise NotFoundError(f"task {name!r} is not loaded (loaded: {loaded}); call Retriever.load(ref) first")
        return entry


def _pixels(videos: torch.Tensor) -> torch.Tensor:
    if videos.dim() == 4:
        videos = videos.unsqueeze(1)
    if videos.dim() != 5 or videos.shape[2] != 3:
        raise ConfigError(f"videos must be a (B, F, 3, H, W) pixel tensor or a list of video files, "
                          f"got shape {tuple(videos.shape)}")
    return videos


def task_frames(entry: Entry | None, bank: Bank) -> int:
    """Frames per clip a task was trained with: its version's ``training_config["num_frames"]``,
    else its method config's ``num_frames`` (vop-p, vop-f*), else 12 (the paper; plain CLIP too)."""
    from vopstore.video import NUM_FRAMES

    if entry is None:
        return NUM_FRAMES
    trained = (getattr(entry.info, "training_config", None) or {}).get("num_frames")
    if isinstance(trained, int) and not isinstance(trained, bool) and trained >= 1:
        return trained
    return getattr(bank.groups[entry.group].config, "num_frames", None) or NUM_FRAMES
