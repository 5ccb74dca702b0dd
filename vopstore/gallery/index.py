"""Search indexes: one content-addressed safetensors file per index, searched with faiss.

An index file holds

* ``vectors``: (N, D) float32, L2-normalised video embeddings, row i for ``ids[i]``;
* ``faiss`` (HNSW and IVF only): the serialised faiss structure over those rows (uint8),
  so a large approximate index is not rebuilt at every load;

and exactly one metadata key, ``vopstore_index``, whose value is canonical JSON: the
:class:`IndexKey` it was built for, the ids, the kind and its parameters. The file's
sha256 is its name; a load re-hashes the bytes and checks the key in the header against
the key asked for, so an index can never answer for prompts it was not built with.

Nothing here imports torch; faiss is imported when an index is built or loaded.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from vopstore.core import canonical_json, is_sha256, sha256_bytes
from vopstore.errors import BlobIntegrityError, ConfigError, InvalidCheckpointError

FORMAT_VERSION = 1
METADATA_KEY = "vopstore_index"
KINDS = ("flat", "hnsw", "ivf")
# The frame sampling rule of vopstore.video: the middle frame (a + b - 1) // 2 of each of num_frames
# equal ranges [a, b), shorter clips repeat their last frame. A change to that rule must change this name
# (indexes built with the earlier a + (b - a) // 2 rule were "uniform-middle").
SAMPLING = "uniform-xpool-middle"
MAX_HEADER_BYTES = 256 * 1024 * 1024  # ids of a few million videos

HNSW_DEFAULTS = {"M": 32, "efConstruction": 100, "efSearch": 256}
IVF_PROBE_FRACTION = 4  # nprobe = nlist / 4


@dataclass(frozen=True)
class IndexKey:
    """What an index's vectors depend on; an index answers only for exactly this key.

    Attributes:
        backbone_fingerprint: the backbone's weights and preprocessing (sha256).
        version_digest: the prompt set's digest (sha256); None for plain zero-shot CLIP.
        num_frames: frames sampled per video; sampling: the rule that picks them.
    """

    backbone_fingerprint: str
    version_digest: str | None
    num_frames: int
    sampling: str = SAMPLING

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def hash(self) -> str:
        """sha256 of the key's canonical JSON: the name of its pointer file."""
        return sha256_bytes(canonical_json(self.to_dict()).encode())

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> IndexKey:
        if not isinstance(raw, dict) or set(raw) != {"backbone_fingerprint", "version_digest", "num_frames",
                                                     "sampling"}:
            raise InvalidCheckpointError(f"{source}: the index key is malformed")
        digest = raw["version_digest"]
        frames = raw["num_frames"]
        if not is_sha256(raw["backbone_fingerprint"]) or not (digest is None or is_sha256(digest)) \
                or not isinstance(frames, int) or isinstance(frames, bool) or frames < 1 \
                or not isinstance(raw["sampling"], str):
            raise InvalidCheckpointError(f"{source}: the index key is malformed")
        return cls(raw["backbone_fingerprint"], digest, frames, raw["sampling"])


def validate_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS)}")
    return kind


def check_params(kind: str, params: dict | None) -> None:
    """Refuse faiss parameters the kind does not take, or that are not positive integers."""
    allowed = {"hnsw": {"M", "efConstruction", "efSearch"}, "ivf": {"nlist", "nprobe"}}.get(kind, set())
    for name, value in (params or {}).items():
        if name not in allowed or isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"invalid {kind} index parameter {name}={value!r}; "
                              f"use positive integers for {', '.join(sorted(allowed)) or 'none (flat has none)'}")


# --- faiss structures ------------------------------------------------------------------------------------------------


def default_params(kind: str, rows: int) -> dict:
    """The faiss parameters of a new index of ``kind`` over ``rows`` vectors."""
    if kind == "hnsw":
        return dict(HNSW_DEFAULTS)
    if kind == "ivf":
        # ~4 sqrt(N) lists, at least 39 training points per list (faiss's own minimum)
        nlist = max(1, min(int(4 * math.sqrt(max(rows, 1))), rows // 39))
        return {"nlist": nlist, "nprobe": max(1, -(-nlist // IVF_PROBE_FRACTION)), "trained_rows": rows}
    return {}


def build_faiss(kind: str, vectors: np.ndarray, params: dict) -> Any:
    """A faiss index over ``vectors`` (rows already normalised) with inner-product scores."""
    import faiss

    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["efConstruction"]
    else:
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # nlist already keeps >= 39 points per list where the rows allow it
        if len(vectors):
            index.train(vectors)
    if len(vectors):
        index.add(vectors)
    return tune(kind, index, params)


def tune(kind: str, index: Any, params: dict) -> Any:
    """Set the search-time parameters (once, at build or load: faiss searches then only read)."""
    if kind == "hnsw":
        index.hnsw.efSearch = params["efSearch"]
    elif kind == "ivf":
        index.nprobe = params["nprobe"]
    return index


def append_faiss(kind: str, index: Any, vectors: np.ndarray, params: dict) -> Any | None:
    """``index`` with ``vectors`` added, or None when a fresh build is better (IVF outgrew its lists)."""
    if kind == "ivf" and (not index.is_trained or index.ntotal + len(vectors) > 4 * max(params["trained_rows"], 1)):
        return None
    if len(vectors):
        index.add(vectors)
    return index


# --- the file --------------------------------------------------------------------------------------------------------


@dataclass
class IndexData:
    """An index in memory: what its file holds, plus the faiss structure built over it."""

    key: IndexKey
    ids: list[str]
    vectors: np.ndarray  # (N, D) float32
    kind: str
    params: dict
    info: dict  # task_ref, gallery, dtype: descriptive, not part of the key
    faiss: Any = None
    digest: str = ""

    @property
    def rows(self) -> int:
        return len(self.ids)

    def meta(self) -> dict:
        return {"format_version": FORMAT_VERSION, "key": self.key.to_dict(), "ids": list(self.ids),
                "kind": self.kind, "params": self.params, "dim": int(self.vectors.shape[1]), "rows": self.rows,
                "info": self.info}

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        import faiss

        tensors = {"vectors": np.ascontiguousarray(self.vectors, dtype=np.float32)}
        if self.kind != "flat" and self.rows:
            tensors["faiss"] = np.ascontiguousarray(faiss.serialize_index(self.faiss), dtype=np.uint8)
        return save(tensors, metadata={METADATA_KEY: canonical_json(self.meta())})

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Top ``k`` (id, inner product) per query row, best first."""
        if not self.rows:
            return [[] for _ in range(len(queries))]
        scores, rows = self.faiss.search(queries, min(k, self.rows))
        return [[(self.ids[r], float(s)) for r, s in zip(row_ids, row_scores) if r >= 0]
                for row_ids, row_scores in zip(rows.tolist(), scores.tolist())]


def read_header(data: bytes | memoryview, source: str) -> tuple[dict, dict, int]:
    """(safetensors tensor table, index metadata, offset of the tensor bytes); one-line errors."""
    if len(data) < 8:
        raise InvalidCheckpointError(f"{source}: not an index file (only {len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", bytes(data[:8]))
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise InvalidCheckpointError(f"{source}: not an index file, or truncated (bad header length)")
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]).decode("utf-8"))
        meta = json.loads(header.pop("__metadata__")[METADATA_KEY])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise InvalidCheckpointError(f"{source}: not a vopstore index file (no '{METADATA_KEY}' metadata)") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise InvalidCheckpointError(f"{source}: unsupported index format {meta.get('format_version')!r}; "
                                     "rebuild it with 'vopstore index build'")
    return header, meta, 8 + header_len


def parse_index(data: bytes, digest: str, expected: IndexKey | None, source: str) -> IndexData:
    """Verify (sha256, key, shapes) and load the index file ``data`` stored under ``digest``."""
    import faiss

    actual = sha256_bytes(data)
    if actual != digest:
        raise BlobIntegrityError(f"{source}: index bytes hash to {actual[:12]}, not {digest[:12]}; "
                             "the file is corrupt: rebuild it with 'vopstore index build'")
    header, meta, _ = read_header(data, source)
    key = IndexKey.from_dict(meta.get("key"), source)
    if expected is not None and key != expected:
        raise BlobIntegrityError(f"{source}: the index was built for another key than its pointer says; "
                             "rebuild it with 'vopstore index build'")
    ids, kind, params = meta.get("ids"), meta.get("kind"), meta.get("params")
    vectors_entry = header.get("vectors")
    if not isinstance(ids, list) or kind not in KINDS or not isinstance(params, dict) or not vectors_entry \
            or vectors_entry.get("dtype") != "F32" or len(vectors_entry.get("shape", ())) != 2 \
            or vectors_entry["shape"][0] != len(ids) or len(set(ids)) != len(ids):
        raise InvalidCheckpointError(f"{source}: malformed index file (ids, kind or vectors); rebuild it")
    from safetensors.numpy import load

    tensors = load(data)
    vectors = tensors["vectors"]
    if kind == "flat" or not ids:
        index = build_faiss("flat", vectors, {}) if ids else None
    else:
        if "faiss" not in tensors:
            raise InvalidCheckpointError(f"{source}: a {kind} index file without its faiss structure; rebuild it")
        index = tune(kind, faiss.deserialize_index(tensors["faiss"]), params)
        if index.ntotal != len(ids) or index.d != vectors.shape[1]:
            raise InvalidCheckpointError(f"{source}: the faiss structure does not match the vectors; rebuild it")
    return IndexData(key, ids, vectors, kind, params, meta.get("info") or {}, index, digest)


def make_index(key: IndexKey, ids: Sequence[str], vectors: np.ndarray, kind: str, info: dict,
               previous: IndexData | None = None, params: dict | None = None) -> IndexData:
    """A new index over (ids, vectors); appends to ``previous``'s faiss structure when that is exact.

    ``params`` overrides the kind's defaults (hnsw: M, efConstruction, efSearch; ivf: nlist, nprobe).
    """
    check_params(kind, params)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ConfigError(f"index vectors must be (N, D) with one row per id, got {vectors.shape} for {len(ids)} ids")
    if previous is not None and previous.kind == kind and kind != "flat" and previous.rows and not params \
            and list(ids[: previous.rows]) == previous.ids:
        # a pure append: extend a copy of the previous structure (faiss indexes are not copied by reference)
        import faiss

        copy = faiss.deserialize_index(faiss.serialize_index(previous.faiss))
        grown = append_faiss(kind, copy, vectors[previous.rows:], previous.params)
        if grown is not None:
            return IndexData(key, list(ids), vectors, kind, previous.params, info, tune(kind, grown, previous.params))
    params = {**default_params(kind, len(ids)), **(params or {})}
    return IndexData(key, list(ids), vectors, kind, params, info, build_faiss(kind, vectors, params))
