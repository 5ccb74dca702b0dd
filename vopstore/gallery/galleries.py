"""Galleries: named sets of videos, and per-(backbone, prompt version, frames) search indexes over them.

Layout under the root (default ``$VOPSTORE_HOME/galleries``)::

    <tenant>/<name>/gallery.json           {"videos": {id: absolute path}} (canonical JSON)
    <tenant>/<name>/indexes/<key>.json     pointer: the key (sha256 of its canonical JSON) -> index digest
    <tenant>/<name>/objects/<sha256>.safetensors   index files, named by the sha256 of their bytes
    <tenant>/<name>/.lock                  held (flock) while the gallery or an index changes

Every write is atomic (temporary file + rename); a pointer moves only after the file it
names is complete, and index files no pointer names are deleted afterwards (a reader that
loses that race reads the pointer again). Readers take no lock.

An index is found by its :class:`~vopstore.gallery.index.IndexKey` only, never by task
name: a search for a task uses the key of the exact version that task has in the caller's
snapshot, so after an alias moves, the new prompts meet an index built with them or an
error saying what to build, never an old index.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from vopstore.core import atomic_write_bytes, canonical_json, is_sha256, retry, sha256_bytes
from vopstore.errors import (BlobIntegrityError, ConfigError, ConflictError, FileMissingError, InvalidRefError,
                             NotFoundError)
from vopstore.gallery.embed import Plan, embed
from vopstore.gallery.index import (FORMAT_VERSION, IndexData, IndexKey, check_params, make_index, parse_index,
                                    read_header, validate_kind)
from vopstore.home import galleries_dir
from vopstore.refs import validate_name

DEFAULT_TENANT = "local"
MAX_ID_LENGTH = 255
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".ogv", ".ts",
                            ".wmv", ".flv", ".3gp", ".gif"})


def parse_gallery(name: str) -> tuple[str, str]:
    """``tenant/name`` (a bare name: tenant ``local``) -> (tenant, name), both valid names."""
    if not isinstance(name, str):
        raise ConfigError(f"a gallery name must be a string like acme/clips, got {type(name).__name__}")
    parts = name.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_TENANT, parts[0]]
    if len(parts) != 2:
        raise InvalidRefError(f"invalid gallery name {name!r}: expected [tenant/]name, e.g. acme/clips")
    return validate_name(parts[0], "tenant"), validate_name(parts[1], "gallery name")


def video_items(videos: Mapping[str, Any] | Iterable[Any]) -> list[tuple[str, Path]]:
    """[(id, absolute path)] from a mapping id -> path or a list of paths (id: the file stem).

    Raises:
        ConfigError: duplicate or invalid ids. FileMissingError: a path that is not a file.
    """
    if isinstance(videos, (str, os.PathLike)):
        videos = [videos]
    items = list(videos.items()) if isinstance(videos, Mapping) else [(Path(p).stem, p) for p in videos]
    seen: dict[str, Path] = {}
    for vid, path in items:
        check_id(vid)
        path = Path(path).expanduser()
        if vid in seen:
            raise ConfigError(f"duplicate video id {vid!r} ({seen[vid]} and {path}); ids must be unique: pass a "
                              "mapping id -> path to name them")
        if not path.is_file():
            raise FileMissingError(f"video {vid!r}: {path} is not a file; pass existing video files")
        seen[vid] = path.resolve()
    return list(seen.items())


def check_id(vid: Any) -> str:
    if not isinstance(vid, str) or not vid or len(vid) > MAX_ID_LENGTH or not vid.isprintable() \
            or vid != vid.strip():
        raise ConfigError(f"invalid video id {vid!r}: use 1-{MAX_ID_LENGTH} printable characters "
                          "without leading or trailing spaces")
    return vid


def _as_queries(queries: Any) -> np.ndarray:
    if hasattr(queries, "detach"):  # a torch tensor
        queries = queries.detach().float().cpu().numpy()
    array = np.ascontiguousarray(queries, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise ConfigError(f"queries must be (B, D) embeddings, got shape {array.shape}")
    return array


class Galleries:
    """Video galleries and their faiss indexes, kept on disk under ``root``.

    Safe to share between threads (a service keeps one: loaded indexes stay in memory
    and are reloaded only when their pointer moves), and between processes on one
    machine (changes hold a file lock on the gallery).
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else galleries_dir()
        self._lock = threading.Lock()
        self._pointers: dict[Path, tuple[tuple, dict]] = {}  # path -> (stat signature, parsed pointer)
        self._loaded: dict[Path, IndexData] = {}  # pointer path -> the index it named when loaded

    def __repr__(self) -> str:
        return f"Galleries({str(self.root)!r})"

    # -- galleries ----------------------------------------------------------------------------------------

    def create(self, name: str, videos: Mapping[str, Any] | Iterable[Any] = ()) -> dict:
        """Create gallery ``name`` holding ``videos``; ConflictError if it exists."""
        items = video_items(videos)
        folder = self._dir(name)
        with self._locked(folder):
            if (folder / "gallery.json").exists():
                raise ConflictError(f"gallery {self.label(name)} exists; add videos to it with add_videos "
                                    "(vopstore index build appends)")
            self._write_gallery(folder, dict(items))
        return self.describe(name)

    def add_videos(self, name: str, videos: Mapping[str, Any] | Iterable[Any]) -> list[str]:
        """Append ``videos`` to gallery ``name``; return the new ids. Indexes catch up at the next build.

        Raises:
            NotFoundError: no such gallery. ConfigError: no videos, or an id already in the gallery.
        """
        items = video_items(videos)
        if not items:
            raise ConfigError(f"no videos to add to gallery {self.label(name)}")
        folder = self._dir(name)
        with self._locked(folder):
            current = self._read_gallery(folder, name)
            taken = [vid for vid, _ in items if vid in current]
            if taken:
                raise ConfigError(f"gallery {self.label(name)} already has video id(s) {', '.join(taken[:5])}"
                                  f"{' ...' if len(taken) > 5 else ''}; ids must be unique: remove them first "
                                  "or name the new videos otherwise")
            current.update(items)
            self._write_gallery(folder, current)
        return [vid for vid, _ in items]

    def remove_videos(self, name: str, ids: Iterable[str]) -> list[str]:
        """Remove videos from gallery ``name`` and from every index of it (rewritten without their rows).

        Raises:
            NotFoundError: no such gallery, or an id it does not hold (then nothing changes).
        """
        ids = list(dict.fromkeys(ids))
        if not ids:
            raise ConfigError(f"name the video ids to remove from gallery {self.label(name)}")
        folder = self._dir(name)
        with self._locked(folder):
            current = self._read_gallery(folder, name)
            unknown = [vid for vid in ids if vid not in current]
            if unknown:
                raise NotFoundError(f"gallery {self.label(name)} has no video {', '.join(map(repr, unknown[:5]))}"
                                    f"{' ...' if len(unknown) > 5 else ''}; 'vopstore index ls' lists galleries")
            gone = set(ids)
            for vid in ids:
                del current[vid]
            for pointer_path in sorted((folder / "indexes").glob("*.json")):
                index = self._load_path(folder, pointer_path, None)
                if index is None or not gone & set(index.ids):
                    continue
                keep = [i for i, vid in enumerate(index.ids) if vid not in gone]
                self._write_index(folder, pointer_path, make_index(
                    index.key, [index.ids[i] for i in keep], index.vectors[keep], index.kind, index.info))
            self._write_gallery(folder, current)
            self._collect(folder)
        return ids

    def delete(self, name: str) -> None:
        """Delete gallery ``name`` and all its indexes (the video files are not touched)."""
        folder = self._dir(name)
        with self._locked(folder):
            self._read_gallery(folder, name)
            for path in [folder / "gallery.json", *(folder / "indexes").glob("*.json")]:
                path.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            for path in [p for p in self._loaded if p.is_relative_to(folder)]:
                del self._loaded[path]

    def exists(self, name: str) -> bool:
        return (self._dir(name) / "gallery.json").is_file()

    def videos(self, name: str) -> dict[str, Path]:
        """id -> video path, in the order they were added."""
        return self._read_gallery(self._dir(name), name)

    def list(self) -> list[dict]:
        """Every gallery: name, video count and its indexes (see :meth:`describe`), sorted by name."""
        if not self.root.is_dir():
            return []
        names = sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in self.root.glob("*/*/gallery.json"))
        out = []
        for name in names:
            with contextlib.suppress(NotFoundError):  # deleted meanwhile
                out.append(self.describe(name))
        return out

    def describe(self, name: str) -> dict:
        """{name, videos, indexes: [{task, version_digest, backbone_fingerprint, num_frames, sampling, kind,
        rows, missing, digest}]}; ``missing``: videos of the gallery the index does not hold yet."""
        folder = self._dir(name)
        videos = self._read_gallery(folder, name)
        indexes = []
        for pointer_path in sorted((folder / "indexes").glob("*.json")):
            pointer = self._pointer(pointer_path)
            if pointer is None:
                continue
            ids = self._header_ids(folder, pointer)
            key = pointer["key"]
            indexes.append({"task": pointer["info"].get("task_ref"), "version_digest": key["version_digest"],
                            "backbone_fingerprint": key["backbone_fingerprint"], "num_frames": key["num_frames"],
                            "sampling": key["sampling"], "kind": pointer["kind"], "rows": pointer["rows"],
                            "missing": None if ids is None else sum(1 for vid in videos if vid not in ids),
                            "digest": pointer["digest"]})
        indexes.sort(key=lambda i: (i["task"] or "", i["version_digest"] or ""))
        return {"name": self.label(name), "videos": len(videos), "indexes": indexes}

    # -- indexes ------------------------------------------------------------------------------------------

    def has_index(self, snapshot: Any, name: str, task: str | None) -> bool:
        """Whether gallery ``name`` has an index for ``task``'s exact version in ``snapshot``."""
        key, _ = self.key_for(snapshot, task)
        return self._pointer(self._dir(name) / "indexes" / f"{key.hash}.json") is not None

    def build(self, retriever: Any, name: str, task: str | None, *, kind: str | None = None,
              progress: bool = True, batch_size: int = 16, params: dict | None = None) -> dict:
        """Embed the gallery's videos not yet in ``task``'s index and append them; return the index's summary.

        Args:
            retriever: a :class:`~vopstore.Retriever` (its current snapshot is used) or a
                :class:`~vopstore.runtime.Snapshot`; ``task`` must be loaded in it (None: plain CLIP).
            kind: ``flat`` (exact inner product), ``hnsw`` or ``ivf`` (approximate, for large
                galleries); None keeps an existing index's kind (``flat`` for a new one). Another
                kind than the existing one rebuilds the structure from the stored vectors.
            progress: show a progress bar (rich, on stderr).
            batch_size: videos decoded and embedded per forward.
            params: faiss parameters instead of the kind's defaults (hnsw: M, efConstruction,
                efSearch; ivf: nlist, nprobe); given, the structure is rebuilt with them.

        Returns:
            {gallery, task, version_digest, num_frames, kind, rows, added, digest}.
        """
        return self.build_many(retriever, name, [task], kind=kind, progress=progress, batch_size=batch_size,
                               params=params)[task]

    def build_many(self, retriever: Any, name: str, tasks: Sequence[str | None], *, kind: str | None = None,
                   progress: bool = True, batch_size: int = 16,
                   params: dict | None = None) -> dict[str | None, dict]:
        """:meth:`build` for several tasks at once: each video is decoded ONCE per frame count and its
        frames are fanned out to every task that needs it, in one mixed-task forward per batch.

        If a video fails to decode, what was embedded before it is kept (indexed) and the error
        is raised; the next build resumes after it once the video is fixed or removed.
        """
        if kind is not None:
            validate_kind(kind)
        if params:
            if kind is None:
                raise ConfigError("params= needs kind= (the index kind they are for)")
            check_params(kind, params)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(tasks, str) or not tasks:
            raise ConfigError("build_many needs a list of tasks (None for plain CLIP)")
        snapshot = retriever.snapshot() if hasattr(retriever, "snapshot") else retriever
        folder = self._dir(name)
        videos = self._read_gallery(folder, name)
        dim = int(snapshot.backbone.model.config.projection_dim)
        plans: dict[str, Plan] = {}  # by key: two tasks on the same version and frames share one index
        by_task: dict[str | None, str] = {}
        for task in tasks:
            key, label = self.key_for(snapshot, task)
            by_task[task] = key.hash
            if key.hash in plans:
                continue
            current = self._current(folder, key)
            have = set(current.ids) if current is not None else set()
            plans[key.hash] = Plan(task=task, key=key, label=label, frames=key.num_frames,
                                   missing=[vid for vid in videos if vid not in have], dim=dim)
        error = None
        try:
            embed(snapshot, videos, list(plans.values()), batch_size=batch_size, progress=progress,
                  gallery=self.label(name))
        except BaseException as exc:  # keep what was embedded, then raise
            error = exc
        dtype = str(getattr(snapshot.backbone, "dtype", "")).replace("torch.", "")
        results = {}
        for key_hash, plan in plans.items():
            if error is not None and not plan.ids:
                continue
            index, added = self._commit(folder, plan, kind, {"task_ref": plan.label, "gallery": self.label(name),
                                                             "dtype": dtype}, params)
            results[key_hash] = {"gallery": self.label(name), "task": plan.label,
                                 "version_digest": plan.key.version_digest, "num_frames": plan.key.num_frames,
                                 "kind": index.kind, "rows": index.rows, "added": added, "digest": index.digest}
        if error is not None:
            raise error
        return {task: results[key_hash] for task, key_hash in by_task.items()}

    def search(self, snapshot: Any, queries: Any, tasks: Sequence[str | None] | str | None, name: str,
               k: int = 10) -> list[list[tuple[str, float]]]:
        """Top-``k`` (video id, inner product) per query row, best first.

        Args:
            snapshot: the :class:`~vopstore.runtime.Snapshot` the queries were encoded with; each
                row's index is the one for its task's exact version there (and its frames).
            queries: (B, D) L2-normalised text embeddings (torch or numpy).
            tasks: one task (or None: plain CLIP) per row; rows of different tasks are searched
                one faiss search per task and returned in row order. A single task applies to all.
            name: the gallery.

        Raises:
            NotFoundError: no such gallery, a task not loaded in ``snapshot``, or no index for a
                row's exact (backbone, version, frames): the message says what to build.
            ConfigError: k < 1, or a tasks list of the wrong length.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        q = _as_queries(queries)
        if tasks is None or isinstance(tasks, str):
            tasks = [tasks] * len(q)
        tasks = list(tasks)
        if len(tasks) != len(q):
            raise ConfigError(f"tasks names {len(tasks)} tasks for {len(q)} query rows; give one task per row")
        folder = self._dir(name)
        if not (folder / "gallery.json").is_file():
            raise self._no_gallery(name)
        groups: dict[str | None, list[int]] = {}
        for row, task in enumerate(tasks):
            groups.setdefault(task, []).append(row)
        out: list[list[tuple[str, float]]] = [[] for _ in range(len(q))]
        for task, rows in groups.items():
            key, label = self.key_for(snapshot, task)
            index = self._current(folder, key)
            if index is None:
                hint = (f"vopstore index build {self.label(name)} --task {label}" if task is not None
                        else f"Galleries.build(retriever, {self.label(name)!r}, None)")
                version = f" ({key.version_digest[:12]}...)" if key.version_digest else ""
                raise NotFoundError(f"gallery {self.label(name)} has no index for {label}{version} with "
                                    f"{key.num_frames} frames; build it: {hint}")
            if index.rows and index.vectors.shape[1] != q.shape[1]:
                raise ConfigError(f"queries have {q.shape[1]} dimensions, the index of {label} has "
                                  f"{index.vectors.shape[1]}; encode the queries with the same backbone")
            for row, hits in zip(rows, index.search(q[rows], k)):
                out[row] = hits
        return out

    # -- keys ---------------------------------------------------------------------------------------------

    @staticmethod
    def key_for(snapshot: Any, task: str | None) -> tuple[IndexKey, str]:
        """(the index key, a label for messages) of ``task`` as loaded in ``snapshot``."""
        from vopstore.runtime.retriever import task_frames  # torch: the galleries themselves need only numpy

        entry = snapshot.entry(task) if task is not None else None
        key = IndexKey(snapshot.backbone.fingerprint, entry.info.digest if entry is not None else None,
                       task_frames(entry, snapshot.bank))
        return key, (entry.info.ref if entry is not None else "plain CLIP (no task)")

    def label(self, name: str) -> str:
        tenant, gallery = parse_gallery(name)
        return f"{tenant}/{gallery}"

    # -- internals ----------------------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        tenant, gallery = parse_gallery(name)
        return self.root / tenant / gallery

    def missing(self, name: str) -> NotFoundError:
        """The error a missing gallery gets (the service gives it for other tenants' galleries too)."""
        return self._no_gallery(name)

    def _no_gallery(self, name: str) -> NotFoundError:
        return NotFoundError(f"no gallery {self.label(name)}; create it with: vopstore index build "
                             f"{self.label(name)} --task TASK --videos DIR")

    @contextlib.contextmanager
    def _locked(self, folder: Path):
        import fcntl  # POSIX only: the module still imports where there is none

        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_gallery(self, folder: Path, name: str) -> dict[str, Path]:
        path = folder / "gallery.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise self._no_gallery(name) from None
        except (ValueError, UnicodeDecodeError):
            raise BlobIntegrityError(f"{path}: not valid JSON; restore it or delete the gallery") from None
        videos = raw.get("videos") if isinstance(raw, dict) else None
        order = raw.get("order") if isinstance(raw, dict) else None
        if not isinstance(videos, dict) or not isinstance(order, list) or sorted(order) != sorted(videos):
            raise BlobIntegrityError(f"{path}: malformed gallery file; restore it or delete the gallery")
        return {vid: Path(videos[vid]) for vid in order}

    def _write_gallery(self, folder: Path, videos: Mapping[str, Path]) -> None:
        # insertion order matters (new rows are appended in it), so the list keeps it: canonical JSON sorts keys
        body = {"format_version": FORMAT_VERSION, "videos": {vid: str(p) for vid, p in videos.items()},
                "order": list(videos)}
        atomic_write_bytes(folder / "gallery.json", canonical_json(body).encode())

    def _pointer(self, path: Path) -> dict | None:
        """The parsed pointer at ``path`` (cached while the file's stat is unchanged), or None."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cached = self._pointers.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            raw = json.loads(path.read_bytes())
            key = IndexKey.from_dict(raw["key"], str(path))
            ok = key.hash == path.stem and is_sha256(raw["digest"]) and isinstance(raw["rows"], int)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise BlobIntegrityError(f"{path}: a malformed index pointer; delete it and rebuild the index")
        self._pointers[path] = (signature, raw)
        return raw

    def _header_ids(self, folder: Path, pointer: dict) -> set[str] | None:
        path = folder / "objects" / f"{pointer['digest']}.safetensors"
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
                size = int.from_bytes(head, "little") if len(head) == 8 else 0
                _, meta, _ = read_header(head + handle.read(size), str(path))
        except (FileNotFoundError, ValueError):
            return None
        return set(meta.get("ids") or ())

    def _current(self, folder: Path, key: IndexKey) -> IndexData | None:
        return self._load_path(folder, folder / "indexes" / f"{key.hash}.json", key)

    def _load_path(self, folder: Path, pointer_path: Path, key: IndexKey | None) -> IndexData | None:
        """The index a pointer names (loaded once per digest, verified), or None without a pointer.

        A writer may replace the index and collect the old file between our reads of the pointer
        and of the file: then the pointer is read again (three tries in all).
        """
        try:
            return retry(lambda: self._load_once(folder, pointer_path, key), attempts=3,
                         when=lambda exc: isinstance(exc, FileNotFoundError))
        except FileNotFoundError as exc:
            raise BlobIntegrityError(f"{exc.filename}: the index file its pointer names is missing; "
                                     "rebuild the index with 'vopstore index build'") from None

    def _load_once(self, folder: Path, pointer_path: Path, key: IndexKey | None) -> IndexData | None:
        pointer = self._pointer(pointer_path)
        if pointer is None:
            return None
        if key is not None and pointer["key"] != key.to_dict():
            raise BlobIntegrityError(f"{pointer_path}: the pointer names another key; delete it and rebuild")
        loaded = self._loaded.get(pointer_path)
        if loaded is not None and loaded.digest == pointer["digest"]:
            return loaded
        object_path = folder / "objects" / f"{pointer['digest']}.safetensors"
        data = object_path.read_bytes()  # FileNotFoundError: collected meanwhile
        index = parse_index(data, pointer["digest"], IndexKey.from_dict(pointer["key"], str(pointer_path)),
                            str(object_path))
        with self._lock:
            self._loaded[pointer_path] = index
        return index

    def _commit(self, folder: Path, plan: Any, kind: str | None, info: dict,
                params: dict | None = None) -> tuple[IndexData, int]:
        """Merge ``plan``'s new rows into its key's current index (re-read under the lock); return (index, added)."""
        pointer_path = folder / "indexes" / f"{plan.key.hash}.json"
        with self._locked(folder):
            videos = self._read_gallery(folder, info["gallery"])
            current = self._load_path(folder, pointer_path, plan.key)
            ids = list(current.ids) if current is not None else []
            vectors = current.vectors if current is not None else None
            removed = [i for i, vid in enumerate(ids) if vid not in videos]  # removed while we embedded
            if removed:
                keep = [i for i, vid in enumerate(ids) if vid in videos]
                ids, vectors = [ids[i] for i in keep], vectors[keep]
            present = set(ids)
            new = [(j, vid) for j, vid in enumerate(plan.ids) if vid in videos and vid not in present]
            target = kind or (current.kind if current is not None else "flat")
            if current is not None and not new and not removed and target == current.kind and \
                    all(current.params.get(n) == v for n, v in (params or {}).items()):
                return current, 0
            if new:
                rows = plan.vectors[[j for j, _ in new]]
                vectors = rows if vectors is None or not len(ids) else np.concatenate([vectors, rows])
                ids += [vid for _, vid in new]
            if vectors is None:  # a new index over nothing: an empty gallery
                vectors = np.zeros((0, plan.dim), np.float32)
            previous = current if current is not None and not removed else None
            index = make_index(plan.key, ids, vectors, target, info, previous=previous, params=params)
            self._write_index(folder, pointer_path, index)
            self._collect(folder)
        return index, len(new)

    def _write_index(self, folder: Path, pointer_path: Path, index: IndexData) -> None:
        data = index.to_bytes()
        index.digest = sha256_bytes(data)
        object_path = folder / "objects" / f"{index.digest}.safetensors"
        if not object_path.is_file():
            atomic_write_bytes(object_path, data)
        pointer = {"format_version": FORMAT_VERSION, "key": index.key.to_dict(), "digest": index.digest,
                   "kind": index.kind, "rows": index.rows, "info": index.info}
        atomic_write_bytes(pointer_path, canonical_json(pointer).encode())
        with self._lock:
            self._loaded[pointer_path] = index

    def _collect(self, folder: Path) -> None:
        """Delete index files no pointer names (call under the gallery lock)."""
        named = set()
        for pointer_path in (folder / "indexes").glob("*.json"):
            pointer = self._pointer(pointer_path)
            if pointer is not None:
                named.add(pointer["digest"])
        for path in (folder / "objects").glob("*.safetensors"):
            if path.stem not in named:
                path.unlink(missing_ok=True)
