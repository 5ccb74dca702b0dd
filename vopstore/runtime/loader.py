"""Everything a load checks before the runtime changes: resolve, compatibility, fetch, verify, parse.

:func:`prepare` either returns a :class:`Prepared` set (a prompt set or a baseline) already
on the backbone's device and dtype, or raises; it never touches a bank, so a load that
fails leaves what was loaded serving exactly as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vopstore.backbone import require_same_backbone
from vopstore.baselines.registry import method_class
from vopstore.checkpoint import load_checkpoint
from vopstore.errors import InvalidCheckpointError, NotFoundError, StoreUnavailableError
from vopstore.prompts.io import from_tensors
from vopstore.refs import parse_ref
from vopstore.runtime.bank import PROMPTS, family
from vopstore.runtime.precompute import tensor_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A verified prompt set or baseline ready to be placed in a bank.

    ``tensors`` are its trained tensors by their file names; ``cache`` holds its precomputed
    keys and values (empty without precompute, and for baselines); ``nbytes`` counts the
    tensors and the cache, ``cache_bytes`` the cache alone.
    """

    task: str
    ref: str
    info: Any
    method_cls: Any
    config: Any
    tensors: dict[str, torch.Tensor]
    nbytes: int
    cache: dict[str, torch.Tensor] = field(default_factory=dict)
    cache_bytes: int = 0


class Source:
    """Where prompt sets come from: a store (usually the local one), optionally fed by a remote.

    With a remote, ``resolve`` asks the remote first and pulls what the store lacks
    (aliases included, so the store follows a moved alias); when the remote is
    unreachable or does not know the ref, the store alone answers, and its cache
    serves the bytes offline.
    """

    def __init__(self, store: Any, remote: Any = None) -> None:
        self.store, self.remote = store, remote

    def resolve(self, ref: str) -> Any:
        """The exact version ``ref`` names, present in the store afterwards."""
        if self.remote is not None:
            try:
                return self._follow_remote(ref)
            except (StoreUnavailableError, NotFoundError) as exc:  # offline or unknown there: the store answers
                log.warning("%s: the remote did not answer (%s: %s); loading what the local store holds",
                            ref, type(exc).__name__, exc)
        return self.store.resolve(ref)

    def _follow_remote(self, ref: str) -> Any:
        from vopstore.store import pull

        info = self.remote.resolve(ref)
        try:
            local = self.store.resolve(info.ref)
        except NotFoundError:
            local = None
        if local is None or local.digest != info.digest:
            return pull(self.remote, self.store, ref)
        alias = parse_ref(ref, self.remote.default_tenant).alias
        if alias and alias not in local.aliases:
            return self.store.tag(local.ref, alias)
        return local

    def fetch(self, info: Any) -> Path:
        """A verified local file for ``info`` (content-addressed cache first)."""
        return self.store.fetch(info)


def task_key(info: Any) -> str:
    return f"{info.tenant}/{info.task}"


def check_compatible(info: Any, backbone: Any) -> Any:
    """Refuse a version for another backbone or an unknown method, from its store record alone;
    return its method class (a prompt method or a baseline)."""
    require_same_backbone(info, backbone, info.ref, hint="serve it with the backbone it was trained on")
    return method_class(info.method)


def prepare(source: Source, backbone: Any, ref: str) -> Prepared:
    """Resolve ``ref``, check it fits ``backbone``, fetch and verify its bytes, build its tensors
    (its cache comes later, for many sets at once: :func:`vopstore.runtime.precompute.with_caches`).

    Raises:
        NotFoundError (task, version, alias), UnknownMethodError, BackboneMismatchError,
        BlobIntegrityError (corrupt blob), InvalidCheckpointError, StoreUnavailableError.
    """
    info = source.resolve(ref)
    method_cls = check_compatible(info, backbone)
    path = source.fetch(info)
    method = _build(path, info, backbone)
    # a baseline's tensors by their file names (its module keeps them under escaped keys); on the
    # backbone's device and dtype already, .to() is a no-op: a full fine-tune is held once
    named = method.named_parameters() if family(method_cls) == PROMPTS else method.named_tensors().items()
    tensors = {name: p.detach().to(backbone.device, backbone.dtype) for name, p in named}
    return Prepared(task_key(info), ref, info, method_cls, method.config, tensors, tensor_bytes(tensors))


def _build(path: Path, info: Any, backbone: Any) -> Any:
    meta, tensors = load_checkpoint(path)
    if meta.method != info.method or meta.backbone_fingerprint != info.backbone_fingerprint:
        raise InvalidCheckpointError(f"{info.ref}: the file says {meta.method} on {meta.backbone_fingerprint[:12]}, "
                                     f"the store says {info.method} on {info.backbone_fingerprint[:12]}; "
                                     "run 'vopstore verify' on the store")
    return from_tensors(meta, tensors, backbone, source=info.ref)
