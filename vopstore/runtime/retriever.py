"""The serving object: one frozen backbone, many loaded prompt sets and baselines, mixed-task batches.

Threads: requests read the current :class:`~vopstore.runtime.bank.Bank` (one
attribute read, no lock) and use only that snapshot; ``load`` / ``unload`` /
``refresh`` prepare everything outside the lock, then build a new bank and swap
the reference under a short lock. The backbone is never modified.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Iterable, Mapping, Sequence

import torch

from vopstore.errors import ConfigError
from vopstore.runtime import precompute
from vopstore.runtime.bank import Bank, BankBuilder, Entry
from vopstore.runtime.loader import Prepared, Source, prepare
from vopstore.runtime.snapshot import Snapshot, task_frames  # noqa: F401 (task_frames: re-export)

log = logging.getLogger(__name__)
BACKGROUND = "background"  # Retriever(precompute=...): compute a new set's cache after it serves


class Retriever:
    """One frozen CLIP serving many VoP prompt sets and baselines; a task swap is an index change.

    A task may be any stored method. Prompt sets and the bias, proj and adapter baselines are
    stacked per (method, config) and served per row on the shared backbone, so rows of all
    of them share a batch; a partial or full fine-tune is held as its own model (its tensors
    beside the backbone's, never written into it) and its rows run in a forward of their own.
    Every task counts its bytes against ``max_bytes`` and is evicted alike.

    Args:
        backbone: a hub name, a folder written by ``save_pretrained``, or a loaded
            :class:`vopstore.backbone.Backbone`.
        device: where the backbone and the prompt banks live (ignored for a Backbone object).
        store: the registry to load from: None (the local store), a store URL or a Registry.
        remote: optional registry to follow: a remote name from ``config.toml``, a URL or a
            Registry. ``load`` pulls from it what ``store`` lacks; when it is unreachable the
            store and its cache answer (offline loads).
        dtype: the backbone's and the prompts' precision.
        max_tasks: keep at most this many tasks loaded (least recently used evicted).
        max_bytes: keep at most this many bytes of loaded tensors (prompt sets, baselines, own models)
            and their caches (LRU as well).
        precompute: at load, compute the prompt keys and values that depend only on the task
            (text ``prefix`` layout: SOT and the prompts at every layer; video: the fresh
            learned prompts of every layer), so that a request runs only its own tokens.
            Costs memory (see :attr:`memory`), saves most of the prompts' compute. The result is
            kept in ``$VOPSTORE_HOME/cache/precomputed`` (checksummed, keyed by the set and the
            backbone) so that the next load of the set, in this process or a restarted one, reads it.
            ``"background"``: a set with nothing kept is placed at once and serves through the
            full forward (same outputs) while a background thread computes its cache, which
            then replaces it in one bank swap (unless the task was unloaded or reloaded
            meanwhile); the first load of a set costs what ``precompute=False`` costs. The cache's
            bytes count against ``max_bytes`` from that swap on (least recently used tasks may be
            evicted then; a cache that cannot fit is dropped with a warning). See :meth:`wait_precomputed`.
    """

    def __init__(self, backbone: Any, device: str | torch.device = "cpu", *, store: Any = None, remote: Any = None,
                 dtype: torch.dtype = torch.float32, max_tasks: int | None = None,
                 max_bytes: int | None = None, precompute: bool | str = True) -> None:
        for name, value in (("max_tasks", max_tasks), ("max_bytes", max_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
        self.backbone = _backbone(backbone, device, dtype)
        if precompute not in (True, False, BACKGROUND):
            raise ConfigError(f"precompute must be True, False or {BACKGROUND!r}, got {precompute!r}")
        self.max_tasks, self.max_bytes, self.precompute = max_tasks, max_bytes, bool(precompute)
        self._background = precompute == BACKGROUND
        self._pending: list[Future] = []
        self._worker: ThreadPoolExecutor | None = None
        self._store_arg, self._remote_arg, self._source = store, remote, None
        self._cache_files = _cache_files(self.backbone) if self.precompute else None
        self._lock = threading.Lock()
        self._builder = BankBuilder()
        self._bank = Bank(0, {}, {})
        self._builder.live.add(self._bank)
        self._clock = itertools.count()
        self._last_used: dict[str, int] = {}
        self._galleries: Any = None

    def __repr__(self) -> str:
        return f"Retriever({self.backbone.name!r}, device={str(self.backbone.device)!r}, loaded={len(self._bank.entries)})"

    # -- requests ---------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The current bank as an immutable :class:`Snapshot` (hold it to pin what a request sees)."""
        return Snapshot(self, self._bank)

    def encode_text(self, texts: str | Sequence[str], task: str | None = None, *,
                    tasks: Sequence[str | None] | None = None, normalize: bool = False) -> torch.Tensor:
        """Projected text embeddings (B, D) on the backbone's device.

        Args:
            texts: a string or a list of strings.
            task: one loaded task (``tenant/task``) for every row; None: plain zero-shot CLIP.
            tasks: one task (or None) per row instead; rows of different tasks and methods
                are served in one call, each exactly as if it ran alone.
            normalize: L2-normalise the embeddings (for cosine similarity).

        Raises:
            NotFoundError: a named task is not loaded. ConfigError: bad ``tasks`` length.
        """
        return self.snapshot().encode_text(texts, task, tasks=tasks, normalize=normalize)

    def encode_video(self, videos: torch.Tensor | Sequence[str | os.PathLike], task: str | None = None, *,
                     tasks: Sequence[str | None] | None = None, normalize: bool = False,
                     num_frames: int | None = None) -> torch.Tensor:
        """Video embeddings (B, D): the mean of the L2-normalised frame embeddings (how every method is trained).

        Args:
            videos: preprocessed pixel values (B, F, 3, H, W) as transformers' CLIP takes
                them (every row uses the caller's F frames; ``num_frames`` is ignored), or a
                list of video files: uniform frames decoded with PyAV and preprocessed like
                the trainer's evaluation transform.
            task, tasks, normalize: as in :meth:`encode_text`.
            num_frames: frames decoded per file. None: each row's task's own count, the
                ``num_frames`` it was trained with (see :func:`task_frames`; 12 for rows
                without a task); an int: that many for every row.
        """
        return self.snapshot().encode_video(videos, task, tasks=tasks, normalize=normalize, num_frames=num_frames)

    def search(self, texts: str | Sequence[str], task: str | None = None, *,
               tasks: Sequence[str | None] | None = None, gallery: str, k: int = 10, galleries: Any = None,
               build_missing: bool = False) -> list[list[tuple[str, float]]]:
        """Top-``k`` videos of ``gallery`` per text: a list per row of (video id, cosine score), best first.

        One snapshot serves the whole call: the texts are encoded (normalised) with it and each
        row searches the index built for its task's exact version there, so an alias moving
        meanwhile cannot pair new prompts with an old index.

        Args:
            texts, task, tasks: as in :meth:`encode_text` (rows of different tasks allowed).
            gallery: ``tenant/name`` (see :class:`vopstore.gallery.Galleries`).
            k: results per row (fewer if the index holds fewer videos).
            galleries: a :class:`~vopstore.gallery.Galleries` or its root folder; None: this
                Retriever's own (``$VOPSTORE_HOME/galleries``, loaded indexes kept in memory).
            build_missing: build the index a row's version lacks (embedding every video of the
                gallery), then search; without it such a row raises NotFoundError.

        Raises:
            NotFoundError: a task not loaded, no such gallery, or no index for a row's exact
                version (the message says what to build). ConfigError: k < 1, bad ``tasks``.
        """
        return self.snapshot().search(texts, task, tasks=tasks, gallery=gallery, k=k, galleries=galleries,
                                      build_missing=build_missing)

    @property
    def galleries(self) -> Any:
        """This Retriever's :class:`~vopstore.gallery.Galleries` (``$VOPSTORE_HOME/galleries``), made on first use."""
        if self._galleries is None:
            from vopstore.gallery import Galleries

            with self._lock:
                if self._galleries is None:
                    self._galleries = Galleries()
        return self._galleries

    @property
    def loaded(self) -> Mapping[str, Any]:
        """task (``tenant/task``) -> the exact ``VersionInfo`` loaded (``.ref`` gives ``tenant/task@vN``)."""
        return self.snapshot().loaded

    @property
    def loaded_bytes(self) -> int:
        """Bytes of the loaded tasks' tensors and their caches (what ``max_bytes`` bounds)."""
        return self._bank.nbytes

    @property
    def memory(self) -> dict[str, dict[str, int]]:
        """task -> {"prompts": bytes of its trained tensors (a prompt set's prompts, a baseline's tensors,
        an own model's every tensor), "cache": bytes of its precomputed keys/values (0 for baselines)}."""
        return {task: {"prompts": e.nbytes - e.cache_bytes, "cache": e.cache_bytes}
                for task, e in self._bank.entries.items()}

    # -- changes ----------------------------------------------------------------------------------

    def load(self, ref: str) -> Any:
        """Resolve ``ref``, pull it if needed, verify it and place it on the device; return its ``VersionInfo``.

        Everything is checked before anything changes: an unknown ref, a prompt set for
        another backbone, an unknown method or a corrupt blob raises, and what was loaded
        stays loaded. Loading another version of a loaded task replaces it atomically.

        Raises:
            NotFoundError (task/version/alias), BackboneMismatchError, UnknownMethodError,
            BlobIntegrityError, InvalidCheckpointError, StoreUnavailableError, ConfigError
            (the set alone exceeds ``max_bytes``).
        """
        return self.load_many([ref])[0]

    def load_many(self, refs: Iterable[str]) -> list[Any]:
        """Load several refs all-or-nothing, in one bank swap; return their ``VersionInfo``s."""
        prepared = self._place([prepare(self.source, self.backbone, ref) for ref in refs])
        return [p.info for p in prepared]

    def wait_precomputed(self, timeout: float | None = None) -> bool:
        """Wait until the caches ``precompute="background"`` is computing are in place (or were
        dropped: the task was unloaded or reloaded meanwhile). Returns False on ``timeout``."""
        with self._lock:
            pending = list(self._pending)
        done, not_done = wait(pending, timeout=timeout)
        with self._lock:
            self._pending = [f for f in self._pending if f not in done]
        return not not_done

    def unload(self, task: str) -> Any:
        """Drop a loaded task; return the ``VersionInfo`` it had. Raises NotFoundError if not loaded."""
        with self._lock:
            entry = self.snapshot()._lookup(task)
            self._bank = self._builder.build(self._bank, [], [entry.task])
            self._last_used.pop(entry.task, None)
        return entry.info

    def refresh(self) -> dict[str, Any]:
        """Follow moved aliases: reload every task whose ref now resolves to another version.

        All changed tasks switch in one bank swap (a request sees all old or all new
        prompts); if any of them fails its checks, nothing changes and the error is raised.

        Returns:
            task -> the newly loaded ``VersionInfo``, for the tasks that changed.
        """
        current = self._bank.entries
        changed, seen = [], {}
        for entry in current.values():
            info = self.source.resolve(entry.ref)  # slow (may pull): a load may commit meanwhile
            if info.digest != entry.info.digest or info.number != entry.info.number:
                changed.append(_prepare_resolved(self, entry.ref, info))
                seen[entry.task] = _identity(entry)
        committed = self._place(changed, expected=seen)
        return {p.task: p.info for p in committed}

    # -- internals --------------------------------------------------------------------------------

    @property
    def source(self) -> Source:
        """The store (and remote) tasks are loaded from; opened on first use."""
        if self._source is None:
            self._source = Source(_open(self._store_arg, remote=False), _open(self._remote_arg, remote=True))
        return self._source

    def _task_key(self, name: str) -> str:
        from vopstore.refs import DEFAULT_TENANT, parse_task

        default = self._source.store.default_tenant if self._source is not None else DEFAULT_TENANT
        try:
            return parse_task(name, default).task_ref
        except ValueError:
            return name

    def _touch(self, tasks: Iterable[str]) -> None:
        # dict assignment and next() on a count are atomic under the GIL: no lock on the request path
        for task in tasks:
            self._last_used[task] = next(self._clock)

    def _place(self, prepared: list[Prepared], expected: Mapping[str, tuple] | None = None) -> list[Prepared]:
        """Commit ``prepared`` with their caches (see :meth:`_commit`); in background mode the caches
        nothing kept are computed after the commit. Returns what was committed."""
        if not (self.precompute and prepared):
            return self._commit(prepared, expected)
        if not self._background:
            return self._commit(precompute.with_caches(self.backbone, prepared, self._cache_files), expected)
        prepared, missing = precompute.read_kept(prepared, self._cache_files)
        committed = self._commit(prepared, expected)
        later = [p for p in (prepared[i] for i in missing) if any(p is c for c in committed)]
        if later:
            self._precompute_later(later)
        return committed

    def _precompute_later(self, plain: list[Prepared]) -> None:
        """Compute the caches of ``plain`` (sets already serving without one) off the request path and
        swap them in, each only if its task still holds the version it had."""
        expected = {p.task: (p.ref, p.info.number, p.info.digest) for p in plain}

        def job() -> None:
            try:
                # nothing kept for these (read_kept just looked): compute, without reading the files again
                computed = precompute.with_computed_caches(self.backbone, plain, range(len(plain)), self._cache_files)
                self._commit(computed, expected=expected)
            except Exception as exc:  # the sets keep serving through the full forward
                log.warning("precomputing the keys/values of %s failed (%s: %s); they serve without",
                            ", ".join(expected), type(exc).__name__, exc)

        with self._lock:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vopstore-precompute")
            self._pending = [f for f in self._pending if not f.done()] + [self._worker.submit(job)]

    def _commit(self, prepared: list[Prepared], expected: Mapping[str, tuple] | None = None) -> list[Prepared]:
        """Swap in ``prepared``; with ``expected`` (refresh: task -> the entry it looked at), a task
        unloaded, evicted or reloaded meanwhile is left as it now is. Returns what was committed."""
        with self._lock:
            if expected is not None:
                entries = self._bank.entries
                prepared = [p for p in prepared
                            if p.task in entries and _identity(entries[p.task]) == expected.get(p.task)]
            if not prepared:
                return []
            evict = self._evictions(prepared)
            self._bank = self._builder.build(self._bank, prepared, evict)
            for task in evict:
                self._last_used.pop(task, None)
            self._touch(p.task for p in prepared)
        return prepared

    def _evictions(self, prepared: list[Prepared]) -> list[str]:
        """Least recently used tasks to drop so that ``prepared`` fits; ConfigError if it cannot."""
        incoming = {p.task: p.nbytes for p in prepared}
        kept = {t: e.nbytes for t, e in self._bank.entries.items() if t not in incoming}
        if (self.max_tasks is not None and len(incoming) > self.max_tasks) or \
                (self.max_bytes is not None and sum(incoming.values()) > self.max_bytes):
            cached = sum(p.cache_bytes for p in prepared)
            hint = f" or pass precompute=False ({cached} of these bytes are precomputed keys/values)" if cached else ""
            raise ConfigError(f"{len(incoming)} set(s) of {sum(incoming.values())} bytes exceed this "
                              f"Retriever's capacity (max_tasks={self.max_tasks}, max_bytes={self.max_bytes}); "
                              f"raise the limits{hint}")
        order = sorted(kept, key=lambda t: self._last_used.get(t, -1))
        evict = []
        while order and not self._fits(len(kept) + len(incoming), sum(kept.values()) + sum(incoming.values())):
            task = order.pop(0)
            kept.pop(task)
            evict.append(task)
        return evict

    def _fits(self, tasks: int, nbytes: int) -> bool:
        return (self.max_tasks is None or tasks <= self.max_tasks) and \
            (self.max_bytes is None or nbytes <= self.max_bytes)


def _identity(entry: Entry) -> tuple:
    """What makes a loaded entry the same one: the ref it was loaded by and the exact version."""
    return entry.ref, entry.info.number, entry.info.digest


def _prepare_resolved(retriever: Retriever, ref: str, info: Any) -> Prepared:
    """``prepare`` for a version already resolved (refresh resolves once, then loads the exact version)."""
    return prepare(_Pinned(retriever.source, ref, info), retriever.backbone, ref)


class _Pinned:
    """A source that answers one ref with a version already resolved."""

    def __init__(self, source: Source, ref: str, info: Any) -> None:
        self._source, self._ref, self._info = source, ref, info

    def resolve(self, ref: str) -> Any:
        return self._info if ref == self._ref else self._source.resolve(ref)

    def fetch(self, info: Any):
        return self._source.fetch(info)


def _backbone(backbone: Any, device: Any, dtype: torch.dtype) -> Any:
    from vopstore.backbone import Backbone, load_backbone

    if isinstance(backbone, Backbone):
        return backbone
    return load_backbone(backbone, device=device, dtype=dtype)


def _open(value: Any, remote: bool) -> Any:
    """A Registry from None / a URL or path / a remote name (remotes only) / a Registry."""
    if value is None:
        if remote:
            return None
        from vopstore.store import open_store

        return open_store()
    if not isinstance(value, (str, os.PathLike)):
        return value
    text = os.fspath(value)
    if remote and "://" not in text and os.sep not in text:
        from vopstore.store import open_remote

        return open_remote(text)
    from vopstore.store import open_store

    return open_store(text)


def _cache_files(backbone: Any) -> Any:
    """Where precomputed caches persist: None for a backbone without a fingerprint (built in memory)."""
    if not backbone.fingerprint:
        return None
    from vopstore.home import cache_dir
    from vopstore.runtime.cache_files import CacheFiles

    return CacheFiles(cache_dir() / "precomputed", backbone)
