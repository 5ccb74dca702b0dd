"""The versioned prompt-set store: ``open_store`` gives a :class:`Registry`; ``push``/``pull`` copy versions.

Torch is never imported. Names load on first use (PEP 562), so that ``open_reader`` (what
``vopstore ls`` uses) runs without importing SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BlobCache": "vopstore.store.cache", "DirectRegistry": "vopstore.store.direct",
    "TaskInfo": "vopstore.store.info", "VersionInfo": "vopstore.store.info",
    "open_reader": "vopstore.store.open", "open_remote": "vopstore.store.open", "open_store": "vopstore.store.open",
    "Registry": "vopstore.store.registry",
    "copy_version": "vopstore.store.sync", "pull": "vopstore.store.sync", "push": "vopstore.store.sync",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vopstore.store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["BlobCache", "DirectRegistry", "Registry", "TaskInfo", "VersionInfo", "copy_version", "open_reader",
           "open_remote", "open_store", "pull", "push"]
