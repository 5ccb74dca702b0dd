"""Where vopstore keeps its local state: ``VOPSTORE_HOME`` (default ``~/.vopstore``).

Layout::

    $VOPSTORE_HOME/
      config.toml        named remotes
      store/store.db     the local store's SQLite database
      store/blobs/       the local store's blobs (content-addressed)
      cache/sha256/ab/<digest>.safetensors   verified blobs from any store, for offline loads
      cache/precomputed/ab/<key>.safetensors  prompt keys/values the runtime computed (vopstore.runtime.cache_files)
      galleries/<tenant>/<name>/   video galleries and their search indexes (vopstore.gallery)
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "VOPSTORE_HOME"


def home_dir() -> Path:
    """The vopstore home folder (not created here)."""
    raw = os.environ.get(ENV_HOME)
    return Path(raw).expanduser() if raw else Path.home() / ".vopstore"


def config_path() -> Path:
    """Path of ``config.toml`` in the home folder."""
    return home_dir() / "config.toml"


def local_store_dir() -> Path:
    """Folder of the default local store (SQLite database + blobs)."""
    return home_dir() / "store"


def cache_dir() -> Path:
    """Folder of the content-addressed cache of verified blobs."""
    return home_dir() / "cache"


def galleries_dir() -> Path:
    """Folder of the video galleries and their search indexes (:mod:`vopstore.gallery`)."""
    return home_dir() / "galleries"
