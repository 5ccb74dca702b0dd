"""A prompt set read back from its checkpoint file (:mod:`vopstore.checkpoint`) onto a backbone.

Writing a prompt set needs only the file format, so it is ``PromptMethod.save``. Reading
one needs the registry too (the file names its method; the registry gives the class), so
it lives here, above both: the registry and the method modules never import this module.
"""

from __future__ import annotations

import os
from typing import Any

from vopstore.backbone import require_same_backbone
from vopstore.baselines.configs import is_baseline  # torch-free
from vopstore.baselines.registry import baseline_from_tensors
from vopstore.checkpoint import PromptSetMeta, load_checkpoint
from vopstore.errors import InvalidCheckpointError
from vopstore.prompts.base import PromptMethod
from vopstore.prompts.configs import Dims
from vopstore.prompts.registry import construct


def load_prompt_set(path: str | os.PathLike, backbone: Any, device: Any = None) -> PromptMethod:
    """Load a prompt set (or a stored baseline) onto ``backbone`` (its dtype; ``device`` or its device).

    Raises:
        BackboneMismatchError: the file's backbone fingerprint differs from ``backbone.fingerprint``.
        UnknownMethodError: the file names a method this vopstore does not know.
        InvalidCheckpointError: the tensors do not fit the method's config.
    """
    meta, tensors = load_checkpoint(path)
    return from_tensors(meta, tensors, backbone, device=device, source=str(path))


def from_tensors(meta: PromptSetMeta, tensors: dict, backbone: Any, device: Any = None,
                 source: str = "prompt set") -> PromptMethod:
    """Build a method from checkpoint metadata + tensors (also used by the runtime on blob bytes)."""
    if is_baseline(meta.method):  # a stored baseline loads through its own registry
        return baseline_from_tensors(meta, tensors, backbone, device=device, source=source)
    require_same_backbone(meta, backbone, source)
    method = construct(meta.method, Dims.from_clip_config(backbone.model.config), 0, meta.config, strict=False)
    expected = {name: tuple(p.shape) for name, p in method.named_parameters()}
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != found:
        raise InvalidCheckpointError(f"{source}: tensors {found} do not match {meta.method} with its config "
                                     f"(expected {expected})")
    method.load_state_dict(tensors, strict=True)
    return method.to(device=device or backbone.device, dtype=backbone.dtype)
