"""The serving core: a Retriever, two batchers (text, video), tenant checks per row, loads that follow aliases.

Prompt sets come from the registry with the caller's own token (so a tenant can
only ever load its own tasks) and land in the service's local store and verified
cache; what is loaded is followed by ``refresh`` (an interval, or ``POST
/v1/refresh``): a moved alias is pulled and switched in one swap. Searches use
the snapshot their query was embedded with, and an index built for exactly that
version (built on the fly when missing), so new prompts never meet an old index.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from vopstore.errors import ConfigError, DataError, NotFoundError, TaskNotFoundError
from vopstore.refs import parse_ref, parse_task, validate_name
from vopstore.serving.auth import Caller, TokenChecker
from vopstore.serving.batching import Batcher
from vopstore.serving.metrics import ServingMetrics
from vopstore.store.http import HttpRegistry
from vopstore.store.sync import pull

log = logging.getLogger("vopstore.serving")


@dataclass
class Followed:
    """A loaded task and the ref it follows (``tenant/task@alias``), with the token that may read it."""

    ref: str
    token: str | None


class Service:
    """Everything a serving process does, independent of HTTP (the app is a thin layer over it)."""

    def __init__(self, retriever, *, remote: str | Any = None, galleries: Any = None, max_rows: int = 64,
                 max_wait_s: float = 0.005, token_ttl_s: float = 10.0, max_video_seconds: float = 600.0,
                 max_video_bytes: int = 256 * 1024 * 1024) -> None:
        self.retriever, self.remote, self.galleries = retriever, remote, galleries
        self.local = retriever.source.store
        self.metrics = ServingMetrics()
        self.auth = TokenChecker(remote if remote is not None else self.local, token_ttl_s)
        self.max_video_seconds, self.max_video_bytes = max_video_seconds, max_video_bytes
        self.text = Batcher(self._forward_text, max_rows=max_rows, max_wait_s=max_wait_s,
                            observe=self.metrics.batch("text"))
        self.video = Batcher(self._forward_video, max_rows=max(1, max_rows // 8), max_wait_s=max_wait_s,
                             observe=self.metrics.batch("video"))
        self.followed: dict[str, Followed] = {}
        self._building = threading.Lock()
        self.ready = False

    # -- the forwards (executor thread) -----------------------------------------------------------

    def _forward_text(self, texts: list[str], tasks: list[str | None]):
        snapshot = self.retriever.snapshot()
        with torch.inference_mode():
            return snapshot.encode_text(texts, tasks=tasks), snapshot

    def _forward_video(self, paths: list[str], tasks: list[str | None]):
        snapshot = self.retriever.snapshot()
        with torch.inference_mode():
            return snapshot.encode_video(paths, tasks=tasks), snapshot

    # -- tenancy ----------------------------------------------------------------------------------

    def row_tasks(self, caller: Caller, task: str | None, tasks: Sequence[str | None] | None, rows: int) -> list:
        """One loaded task of the caller's tenant (or None: zero-shot CLIP) per row; others look missing."""
        if tasks is not None and task is not None:
            raise ConfigError("pass either task (every row) or tasks (one per row), not both")
        names = list(tasks) if tasks is not None else [task] * rows
        if len(names) != rows:
            raise ConfigError(f"tasks has {len(names)} entries for {rows} rows; give one task (or null) per row")
        loaded = self.retriever.loaded
        out = []
        for name in names:
            if name is None:
                out.append(None)
                continue
            ref = parse_task(name, caller.tenant)
            if ref.tenant != caller.tenant or ref.task_ref not in loaded:
                raise TaskNotFoundError(f"task {ref.task_ref} is not loaded here; load it with "
                                        f"POST /v1/tasks/{ref.tenant}/{ref.task}:load")
            out.append(ref.task_ref)
        return out

    def gallery_name(self, caller: Caller, name: str) -> str:
        tenant, _, short = name.rpartition("/")
        tenant = tenant or caller.tenant
        validate_name(short, "gallery")
        if tenant != caller.tenant:  # exactly what a missing gallery of one's own gets
            validate_name(tenant, "tenant")
            raise self.galleries.missing(f"{tenant}/{short}") if self.galleries is not None else \
                NotFoundError(f"no gallery {tenant}/{short}")
        return f"{tenant}/{short}"

    # -- requests ---------------------------------------------------------------------------------

    async def embed_text(self, caller: Caller, texts: list[str], task=None, tasks=None, normalize=True):
        rows = self.row_tasks(caller, task, tasks, len(texts))
        out, snapshot = await self.text.submit(texts, rows)
        return _normalized(out, normalize), _versions(snapshot, rows)

    async def embed_video(self, caller: Caller, path: Path, task=None, normalize=True):
        rows = self.row_tasks(caller, task, None, 1)
        self._check_duration(path)
        out, snapshot = await self.video.submit([str(path)], rows)
        return _normalized(out, normalize), _versions(snapshot, rows)

    async def search(self, caller: Caller, texts: list[str], gallery: str, k: int, task=None, tasks=None):
        if self.galleries is None:
            raise ConfigError("this server has no galleries; start it with galleries to search")
        name = self.gallery_name(caller, gallery)
        rows = self.row_tasks(caller, task, tasks, len(texts))
        if any(r is None for r in rows):
            raise ConfigError("search needs a task for every row (galleries are indexed per prompt version)")
        for attempt in range(2):
            out, snapshot = await self.text.submit(texts, rows)
            try:
                return self.galleries.search(snapshot, _normalized(out, True), rows, name, k), _versions(snapshot, rows)
            except NotFoundError:  # no index for this version yet: build it in a worker thread, not on the loop
                if attempt or not await asyncio.to_thread(self._build_missing, name, rows):
                    raise

    def _build_missing(self, name: str, rows: list[str]) -> bool:
        """Build the indexes a search lacked (for the versions now loaded); False if there is nothing to build."""
        if not self.galleries.exists(name):
            return False
        with self._building:  # one build at a time: concurrent searches wait for it, then find the index
            for task in sorted(set(rows)):
                if not self.galleries.has_index(self.retriever.snapshot(), name, task):
                    self.galleries.build(self.retriever, name, task, progress=False)
        return True

    def _check_duration(self, path: Path) -> None:
        import av

        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                seconds = (container.duration / 1_000_000 if container.duration else
                           float(stream.duration * stream.time_base) if stream.duration else 0.0)
        except (av.error.FFmpegError, IndexError, OSError, ValueError):
            raise DataError("the upload is not a video PyAV can decode; send an mp4/webm/mkv file") from None
        if seconds > self.max_video_seconds:
            raise DataError(f"the video lasts {seconds:.0f} s, over this server's limit of "
                            f"{self.max_video_seconds:.0f} s; cut it shorter")

    # -- loading and following --------------------------------------------------------------------

    def load(self, caller: Caller, tenant: str, task: str, selector: str = "latest", token: str | None = None):
        """Pull (with the caller's token) and load ``tenant/task@selector``; follow that ref from now on."""
        ref = parse_ref(f"{tenant}/{task}@{selector}")
        if ref.tenant != caller.tenant:
            raise TaskNotFoundError(f"no task {ref.task_ref} in the registry; list tasks with 'vopstore ls'")
        info = self._fetch(str(ref), token)
        self.retriever.load(info.ref)
        self.followed[ref.task_ref] = Followed(str(ref), token)
        self.metrics.swaps.labels("load").inc()
        self._loaded_gauges()
        return info

    def unload(self, caller: Caller, tenant: str, task: str):
        ref = parse_task(f"{tenant}/{task}")
        if ref.tenant != caller.tenant or ref.task_ref not in self.retriever.loaded:
            raise TaskNotFoundError(f"task {ref.task_ref} is not loaded here")
        info = self.retriever.unload(ref.task_ref)
        self.followed.pop(ref.task_ref, None)
        self.metrics.swaps.labels("unload").inc()
        self._loaded_gauges()
        return info

    def refresh(self, tenant: str | None = None) -> dict[str, Any]:
        """Switch every followed task (of ``tenant``; None: all) whose ref now names another version.

        Returns task -> the new version, for the tasks that changed.
        """
        changed = {}
        for task, followed in list(self.followed.items()):
            if tenant is not None and not task.startswith(f"{tenant}/"):
                continue
            loaded = self.retriever.loaded.get(task)
            try:
                info = self._resolve(followed.ref, followed.token)
                if loaded is None or info.digest == loaded.digest:
                    continue
                info = self._fetch(followed.ref, followed.token)
                self.retriever.load(info.ref)
            except Exception as exc:  # noqa: BLE001 - keep serving what is loaded; say why in the log
                log.warning("refresh of %s failed, still serving %s: %s", task, loaded.ref if loaded else None, exc)
                continue
            changed[task] = info
            self.metrics.swaps.labels("refresh").inc()
        self._loaded_gauges()
        return changed

    def _resolve(self, ref: str, token: str | None):
        if self.remote is None:
            return self.local.resolve(ref)
        client = self._client(token)
        try:
            return client.resolve(ref)
        finally:
            client.close()

    def _fetch(self, ref: str, token: str | None):
        """The exact version ``ref`` names, present in the local store (pulled with ``token`` from the remote)."""
        if self.remote is None:
            info = self.local.resolve(ref)
            self.metrics.cache.labels("hit" if self.local.cache.get(info.digest, info.tenant) else "miss").inc()
            return info
        client = self._client(token)
        try:
            remote_info = client.resolve(ref)
            self.metrics.cache.labels("hit" if self.local.cache.get(remote_info.digest, remote_info.tenant) else "miss").inc()
            return pull(client, self.local, remote_info.ref)
        finally:
            client.close()

    def _client(self, token: str | None):
        """A registry that reads with the caller's token (a registry URL), or the trusted direct remote."""
        if isinstance(self.remote, str):
            return HttpRegistry(self.remote, token)
        return _Unclosed(self.remote)

    def tasks(self, caller: Caller) -> list[dict]:
        out, entries = [], self.retriever.snapshot().bank.entries  # one snapshot: a consistent listing
        for task, entry in sorted(entries.items()):
            info = entry.info
            if info.tenant != caller.tenant:
                continue
            followed = self.followed.get(task)
            out.append({"task": task, "ref": info.ref, "digest": info.digest, "method": info.method,
                        "bytes": entry.nbytes, "cache_bytes": entry.cache_bytes,
                        "follows": followed.ref if followed else None,
                        "last_used": self.retriever._last_used.get(task)})
        return out

    def _loaded_gauges(self) -> None:
        self.metrics.tasks_loaded.set(len(self.retriever.loaded))
        self.metrics.loaded_bytes.set(self.retriever.loaded_bytes)

    def close(self) -> None:
        self.text.close()
        self.video.close()


class _Unclosed:
    """A shared registry lent to one call: ``close`` is a no-op."""

    def __init__(self, registry) -> None:
        self._registry = registry

    def __getattr__(self, name):
        return getattr(self._registry, name)

    def close(self) -> None:
        pass


def _normalized(out: torch.Tensor, normalize: bool) -> torch.Tensor:
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def _versions(snapshot, rows: list) -> dict[str, str]:
    loaded = snapshot.loaded
    return {task: loaded[task].ref for task in rows if task is not None and task in loaded}

