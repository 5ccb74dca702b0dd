"""vopstore: VoP prompt sets on a frozen CLIP, versioned, stored and hot-swapped.

Heavy modules (torch, transformers, boto3, SQLAlchemy) are imported lazily, on
first use of the name that needs them, so ``import vopstore`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it; filled in as modules land.
_LAZY = {
    "open_store": "vopstore.store",
    "push": "vopstore.store",
    "pull": "vopstore.store",
    "load_backbone": "vopstore.backbone",
    "build_method": "vopstore.prompts",
    "load_prompt_set": "vopstore.prompts",
    "Retriever": "vopstore.runtime",
    "parse_ref": "vopstore.refs",
    "Ref": "vopstore.refs",
    "VopstoreError": "vopstore.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vopstore' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
