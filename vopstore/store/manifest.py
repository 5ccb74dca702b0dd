"""Manifests: what the database knows about each version, also written beside its blob.

So that a lost or rolled-back database can be rebuilt from the blob store alone
(``vopstore fsck --rebuild``), every write leaves a small JSON record there,
after its transaction commits (a record never describes an uncommitted write):

* ``{tenant}/manifests/{task}/v{N}.json``: the version's metadata; immutable (create-only);
* ``{tenant}/aliases/{task}/{alias}/{ns}-{uuid}.json``: each alias move, append-only;
  ``version`` is null for an untag. The latest key (nanosecond UTC stamp first) wins;
  two moves of one alias within the same instant may rebuild either way;
* ``{tenant}/removed/{task}/v{N}.json``: a tombstone, so a rebuild does not resurrect
  a removed version. Storing the number again (a pull of a removed version) lifts it.

None of these keys has the blob shape ``{tenant}/sha256/{aa}/{digest}``, so gc never
collects them.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from vopstore.blobs.base import is_blob_key
from vopstore.core import canonical_json
from vopstore.errors import InvalidCheckpointError
from vopstore.store.info import VersionInfo

FORMAT = 1
_NAME = r"[a-z0-9][a-z0-9._-]{0,63}"
_MANIFEST = re.compile(rf"(?P<tenant>{_NAME})/manifests/(?P<task>{_NAME})/v(?P<number>[1-9][0-9]*)\.json")
_REMOVED = re.compile(rf"(?P<tenant>{_NAME})/removed/(?P<task>{_NAME})/v(?P<number>[1-9][0-9]*)\.json")
_ALIAS = re.compile(rf"(?P<tenant>{_NAME})/aliases/(?P<task>{_NAME})/(?P<alias>{_NAME})/[0-9]{{20}}-[0-9a-f]{{32}}\.json")

VersionKey = tuple[str, str, int]  # (tenant, task, number)
AliasKey = tuple[str, str, str]  # (tenant, task, alias)


def manifest_key(tenant: str, task: str, number: int) -> str:
    return f"{tenant}/manifests/{task}/v{number}.json"


def tombstone_key(tenant: str, task: str, number: int) -> str:
    return f"{tenant}/removed/{task}/v{number}.json"


def alias_key(tenant: str, task: str, alias: str) -> str:
    # Zero-padded nanoseconds sort as text; the uuid keeps two writers of one instant apart.
    return f"{tenant}/aliases/{task}/{alias}/{time.time_ns():020d}-{uuid.uuid4().hex}.json"


# -- writing (called by DirectRegistry after each commit) -------------------------------------------


def record_version(blobs, info: VersionInfo, created: bool) -> None:
    """Write the manifest of a version just stored (create-only; an existing one is kept).

    ``created``: the row is new. If its number was used before (removed, then pulled
    again) its tombstone is lifted, and a manifest describing other bytes is replaced.
    """
    key, body = manifest_key(info.tenant, info.task, info.number), _encode(manifest_of(info))
    if created:
        blobs.delete(tombstone_key(info.tenant, info.task, info.number))
    if not blobs.put(key, body) and created and _read(blobs, key).get("digest") != info.digest:
        blobs.delete(key)
        blobs.put(key, body)


def record_alias(blobs, tenant: str, task: str, alias: str, info: VersionInfo | None, by: str | None) -> None:
    """Append one alias move (``info`` None: the alias was removed)."""
    target = None if info is None else {"number": info.number, "digest": info.digest}
    blobs.put(alias_key(tenant, task, alias), _encode(
        {"format": FORMAT, "tenant": tenant, "task": task, "alias": alias, "version": target,
         "at": _now(), "by": by}))


def record_aliases(blobs, info: VersionInfo, aliases, by: str | None) -> None:
    for alias in aliases:
        record_alias(blobs, info.tenant, info.task, alias, info, by)


def record_removal(blobs, info: VersionInfo, by: str | None) -> None:
    """Tombstone a removed version, and record the aliases ``rm --force`` dropped with it."""
    for alias in info.aliases:
        record_alias(blobs, info.tenant, info.task, alias, None, by)
    blobs.put(tombstone_key(info.tenant, info.task, info.number), _encode(
        {"format": FORMAT, "tenant": info.tenant, "task": info.task, "number": info.number, "digest": info.digest,
         "removed_at": _now(), "removed_by": by}))


def manifest_of(info: VersionInfo) -> dict:
    return {"format": FORMAT, "tenant": info.tenant, "task": info.task, "number": info.number,
            "digest": info.digest, "size": info.size, "method": info.method, "method_config": info.method_config,
            "dtype": info.dtype, "params": info.params,
            "backbone": {"name": info.backbone_name, "fingerprint": info.backbone_fingerprint},
            "metrics": info.metrics, "training_config": info.training_config, "message": info.message,
            "parent": info.parent, "created_at": info.created_at.isoformat() if info.created_at else None,
            "created_by": info.created_by}


# -- reading (fsck, rebuild, gc) ----------------------------------------------------------------------


@dataclass
class Records:
    """What a listing of the blob store says, from key names alone (no object is read)."""

    manifests: dict[VersionKey, str] = field(default_factory=dict)
    removed: set[VersionKey] = field(default_factory=set)
    alias_heads: dict[AliasKey, str] = field(default_factory=dict)  # the latest record of each alias
    blobs: set[str] = field(default_factory=set)

    @property
    def live(self) -> dict[VersionKey, str]:
        """Manifests of versions not removed since."""
        return {k: key for k, key in self.manifests.items() if k not in self.removed}


def scan(keys) -> Records:
    records = Records()
    for key in keys:
        if is_blob_key(key):
            records.blobs.add(key)
        elif match := _MANIFEST.fullmatch(key):
            records.manifests[_version(match)] = key
        elif match := _REMOVED.fullmatch(key):
            records.removed.add(_version(match))
        elif match := _ALIAS.fullmatch(key):
            name = (match["tenant"], match["task"], match["alias"])
            records.alias_heads[name] = max(key, records.alias_heads.get(name, ""))
    return records


def read_manifest(blobs, key: str) -> VersionInfo:
    """The VersionInfo a manifest describes (no aliases); InvalidCheckpointError if it is damaged."""
    raw = _read(blobs, key)
    try:
        backbone = raw["backbone"]
        created = raw.get("created_at")
        return VersionInfo(
            tenant=raw["tenant"], task=raw["task"], number=int(raw["number"]), digest=raw["digest"],
            size=int(raw["size"]), method=raw["method"], params=int(raw["params"]), backbone_name=backbone["name"],
            backbone_fingerprint=backbone["fingerprint"], metrics=raw.get("metrics"),
            training_config=raw.get("training_config"), message=raw.get("message"),
            created_at=datetime.fromisoformat(created) if created else None, created_by=raw.get("created_by"),
            method_config=raw.get("method_config") or {}, dtype=raw.get("dtype", "float32"), parent=raw.get("parent"))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidCheckpointError(f"manifest {key} in {blobs.url} is damaged ({exc!r})") from None


def read_alias(blobs, key: str) -> tuple[int, str] | None:
    """(number, digest) an alias record points at; None for an untag."""
    target = _read(blobs, key).get("version")
    if target is None:
        return None
    try:
        return int(target["number"]), str(target["digest"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidCheckpointError(f"alias record {key} in {blobs.url} is damaged ({exc!r})") from None


def _read(blobs, key: str) -> dict:
    data = blobs.get(key)
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidCheckpointError(f"record {key} in {blobs.url} is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise InvalidCheckpointError(f"record {key} in {blobs.url} is not a JSON object")
    return raw


def _version(match) -> VersionKey:
    return match["tenant"], match["task"], int(match["number"])


def _encode(obj: dict) -> bytes:
    return canonical_json(obj).encode("utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
