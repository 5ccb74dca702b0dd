"""Precomputed keys and values kept on disk, so a restarted service does not compute them again.

Computing a text cache reads every weight of the text tower once (about 150 MB for ViT-B/32,
~20 ms on two CPU cores), several times what loading a prompt set from the local cache costs.
The result depends only on the prompt set's bytes and the backbone it runs on, so it is
kept under ``$VOPSTORE_HOME/cache/precomputed/`` and read back by the next load of the same
set on the same backbone.

A file is named by the sha256 of what its content depends on (the set's digest, the backbone's
fingerprint, architecture, SOT token, dtype and device type, and :data:`FORMAT`, bumped whenever
the computation changes)
and carries the sha256 of its tensors; a file that is missing, torn, altered or written for
something else is a miss: the cache is computed again and the file rewritten. Writing is best
effort (a read-only home only costs the saving).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import torch

from vopstore.core import atomic_write, canonical_json, sha256_bytes

log = logging.getLogger(__name__)

FORMAT = 1  # bump when precompute's arithmetic or the cache layout changes: old files become misses


class CacheFiles:
    """The precomputed caches of one backbone under ``root`` (one safetensors file per prompt set)."""

    def __init__(self, root: str | Path, backbone: Any) -> None:
        self.root = Path(root)
        # the fingerprint covers the weights and preprocessing; the architecture (activation, heads)
        # and the SOT id shape the keys too, so they are part of the name as well
        config = {k: v for k, v in backbone.model.config.to_dict().items() if k != "_name_or_path"}
        architecture = sha256_bytes(json.dumps(config, sort_keys=True, default=str).encode())
        self._backbone_key = {"fingerprint": backbone.fingerprint, "dtype": str(backbone.dtype),
                              "device": backbone.device.type, "format": FORMAT, "architecture": architecture,
                              "sot": backbone.tokenizer.bos_token_id}
        self._device = backbone.device

    def path(self, digest: str) -> Path:
        """The file of the prompt set with blob ``digest`` on this backbone."""
        key = sha256_bytes(canonical_json({**self._backbone_key, "digest": digest}).encode())
        return self.root / key[:2] / f"{key}.safetensors"

    def read(self, digest: str, names: set[str]) -> dict[str, torch.Tensor] | None:
        """The cache of prompt set ``digest`` holding exactly ``names``, or None (a miss)."""
        from safetensors import safe_open

        path = self.path(digest)
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except FileNotFoundError:
            return None
        except Exception as exc:  # torn or foreign file: compute again, the write replaces it
            log.warning("precomputed cache %s unreadable (%s); computing it again", path, exc)
            return None
        if set(tensors) != names or meta.get("digest") != digest or meta.get("sha256") != _content_sha256(tensors):
            log.warning("precomputed cache %s does not match its prompt set; computing it again", path)
            return None
        return {name: t.to(self._device) for name, t in tensors.items()}

    def write(self, digest: str, cache: Mapping[str, torch.Tensor]) -> None:
        """Keep ``cache`` for the next load of ``digest`` (best effort: a failure is logged)."""
        from safetensors.torch import save

        tensors = {name: t.detach().to("cpu").contiguous() for name, t in cache.items()}
        try:
            data = save(tensors, metadata={"digest": digest, "sha256": _content_sha256(tensors)})
            with atomic_write(self.path(digest), durable=False) as tmp:  # a torn file is only a miss
                tmp.write_bytes(data)
        except OSError as exc:
            log.warning("could not keep the precomputed cache of %s (%s); the next load computes it again",
                        digest[:12], exc)


def _content_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(canonical_json([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()
