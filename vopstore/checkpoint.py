"""The prompt-set checkpoint format: ONE safetensors file.

The file holds the prompt tensors plus exactly one metadata key, ``vopstore``,
whose value is canonical JSON (sorted keys, no whitespace). safetensors writes
several metadata keys in a random order, so a single key is what makes "same
content -> same bytes -> same sha256" hold, and the sha256 of the file is its
identity everywhere (blob key, version digest, cache path).

Reading and validating the header needs no torch, so the store and the CLI can
check a file without importing it. Hashing, canonical JSON and atomic writes come from
:mod:`vopstore.core`; this module is only the file format.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from vopstore.core import atomic_write_bytes, canonical_json, is_sha256, sha256_bytes
from vopstore.errors import FileMissingError, InvalidCheckpointError
from vopstore.prompts import schema as prompt_schema  # torch-free

FORMAT_VERSION = 1
METADATA_KEY = "vopstore"
MAX_HEADER_BYTES = 16 * 1024 * 1024
# Longest value of each text field that the store's database columns hold.
_MAX_LENGTHS = {"method": 64, "dtype": 32, "backbone_name": 255}
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class PromptSetMeta:
    """What a prompt set says about itself; stored as the ``vopstore`` metadata key."""

    method: str
    config: dict
    backbone_name: str
    backbone_fingerprint: str
    dtype: str
    params: int
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_tensors(cls, tensors: Mapping[str, Any], *, method: str, config: dict, backbone: Any,
                    extra: dict | None = None) -> PromptSetMeta:
        """The metadata of ``tensors`` trained as ``method`` with ``config`` on ``backbone``.

        The dtype names and the parameter count are read off the tensors themselves, so the
        file never says something its tensors contradict.
        """
        dtypes = {str(t.dtype).removeprefix("torch.") for t in tensors.values()}
        return cls(method=method, config=config, backbone_name=backbone.name,
                   backbone_fingerprint=backbone.fingerprint, dtype=",".join(sorted(dtypes)),
                   params=sum(t.numel() for t in tensors.values()), extra=extra or {})

    def to_json(self) -> str:
        return canonical_json(asdict(self))

    @classmethod
    def from_json(cls, text: str, source: str = "checkpoint") -> PromptSetMeta:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidCheckpointError(f"{source}: the '{METADATA_KEY}' metadata is not JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise InvalidCheckpointError(f"{source}: the '{METADATA_KEY}' metadata must be a JSON object")
        version = raw.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise InvalidCheckpointError(f"{source}: metadata has no valid format_version")
        if version > FORMAT_VERSION:
            raise InvalidCheckpointError(
                f"{source}: written by a newer vopstore (format {version} > {FORMAT_VERSION}); upgrade vopstore"
            )
        expected = {"method": str, "config": dict, "backbone_name": str,
                    "backbone_fingerprint": str, "dtype": str, "params": int}
        for key, kind in expected.items():
            if not isinstance(raw.get(key), kind) or isinstance(raw.get(key), bool):
                raise InvalidCheckpointError(f"{source}: metadata field '{key}' is missing or not a {kind.__name__}")
        for key, limit in _MAX_LENGTHS.items():
            if len(raw[key]) > limit:
                raise InvalidCheckpointError(f"{source}: metadata field '{key}' is longer than {limit} characters")
        fingerprint = raw["backbone_fingerprint"]
        if not is_sha256(fingerprint):
            raise InvalidCheckpointError(
                f"{source}: metadata field 'backbone_fingerprint' must be a sha256 (64 lowercase hex digits), "
                f"got {fingerprint[:70]!r}")
        known = {k: raw[k] for k in (*expected, "format_version")}
        extra = raw.get("extra", {})
        return cls(**known, extra=extra if isinstance(extra, dict) else {})


@dataclass(frozen=True)
class CheckpointInfo:
    """A validated checkpoint file: its metadata, tensor shapes, sha256 and size."""

    path: Path
    meta: PromptSetMeta
    tensors: dict[str, tuple[str, tuple[int, ...]]]
    sha256: str
    size: int


def parse_checkpoint_bytes(data: bytes, source: str = "checkpoint", *,
                           contents: bool = False) -> tuple[PromptSetMeta, dict]:
    """Validate the safetensors layout and the metadata of ``data``; return (meta, tensor table).

    Refuses truncated files, non-safetensors files, and a missing, extra or invalid
    metadata key, each with a one-line reason. With ``contents`` (what the store does at
    add, push and import) the tensors must also be what the method's schema says: known
    method and config keys, tensor names, shapes, float dtypes, finite values
    (:mod:`vopstore.prompts.schema`, no torch); UnknownMethodError for an unknown method.
    """
    if len(data) < 8:
        raise InvalidCheckpointError(f"{source}: not a safetensors file (only {len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise InvalidCheckpointError(f"{source}: not a safetensors file, or truncated (bad header length)")
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidCheckpointError(f"{source}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise InvalidCheckpointError(f"{source}: not a safetensors file (header is not an object)")
    metadata = header.pop("__metadata__", None) or {}
    if set(metadata) != {METADATA_KEY}:
        raise InvalidCheckpointError(
            f"{source}: expected exactly one metadata key '{METADATA_KEY}', found {sorted(metadata) or 'none'}; "
            "save prompt sets with vopstore (method.save(path, backbone) or 'vopstore train')"
        )
    meta = PromptSetMeta.from_json(metadata[METADATA_KEY], source)
    table = _check_tensor_table(header, len(data) - 8 - header_len, source)
    counted = sum(_numel(shape) for _, shape in table.values())
    if counted != meta.params:
        raise InvalidCheckpointError(f"{source}: metadata says {meta.params} parameters, tensors hold {counted}")
    if contents:
        prompt_schema.check_prompt_set(meta, header, memoryview(data)[8 + header_len:], source)
    return meta, table


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_tensor_table(header: dict, body_len: int, source: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Check that tensor byte ranges tile the body exactly (catches truncation and padding)."""
    if not header:
        raise InvalidCheckpointError(f"{source}: the file holds no tensors")
    spans, table = [], {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise InvalidCheckpointError(f"{source}: malformed entry for tensor {name!r}") from None
        if not all(_is_count(x) for x in (begin, end)):
            raise InvalidCheckpointError(f"{source}: malformed entry for tensor {name!r}")
        if not isinstance(dtype, str) or dtype not in _DTYPE_BYTES or not all(_is_count(d) for d in shape):
            raise InvalidCheckpointError(f"{source}: tensor {name!r} has an unsupported dtype or shape")
        if end - begin != _numel(shape) * _DTYPE_BYTES[dtype]:
            raise InvalidCheckpointError(f"{source}: tensor {name!r} byte range does not match its shape")
        spans.append((begin, end))
        table[name] = (dtype, shape)
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise InvalidCheckpointError(f"{source}: tensor data has gaps or overlaps")
        position = end
    if position != body_len:
        raise InvalidCheckpointError(
            f"{source}: truncated or padded: tensors need {position} bytes, the file has {body_len}"
        )
    return table


def read_checkpoint(path: str | os.PathLike, *, contents: bool = False) -> tuple[bytes, PromptSetMeta, dict]:
    """Read the checkpoint file at ``path`` once and validate it; return (its bytes, meta, tensor table).

    ``contents``: check the tensors against the method's schema too (see :func:`parse_checkpoint_bytes`).
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidCheckpointError(f"{path}: is a folder, not a file; pass the path of a .safetensors prompt set")
    if not path.is_file():
        raise FileMissingError(f"{path}: no such file; pass the path of a .safetensors prompt set")
    data = path.read_bytes()
    return (data, *parse_checkpoint_bytes(data, str(path), contents=contents))


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Validate the checkpoint file at ``path`` and describe it (no torch needed)."""
    path = Path(path)
    data, meta, table = read_checkpoint(path)
    return CheckpointInfo(path=path, meta=meta, tensors=table, sha256=sha256_bytes(data), size=len(data))


def checkpoint_bytes(tensors: Mapping[str, Any], meta: PromptSetMeta) -> bytes:
    """Serialise torch tensors + metadata to the canonical checkpoint bytes."""
    from safetensors.torch import save  # torch is imported only when a checkpoint is written

    clean = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    data = save(clean, metadata={METADATA_KEY: meta.to_json()})
    parse_checkpoint_bytes(data, "new checkpoint")  # the writer must never produce what the reader refuses
    return data


def save_checkpoint(path: str | os.PathLike, tensors: Mapping[str, Any], meta: PromptSetMeta) -> str:
    """Write a checkpoint atomically; return its sha256."""
    data = checkpoint_bytes(tensors, meta)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[PromptSetMeta, dict]:
    """Validate and load a checkpoint; return (meta, {name: tensor})."""
    from safetensors.torch import load

    data, meta, _ = read_checkpoint(path)
    tensors = {name: t.to(device) for name, t in load(data).items()}
    return meta, tensors
