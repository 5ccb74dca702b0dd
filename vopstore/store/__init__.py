"""The versioned prompt-set store: ``open_store`` gives a :class:`Registry`; ``push``/``pull`` copy versions.

SQLAlchemy is imported with this package, torch never.
"""

from vopstore.store.cache import BlobCache
from vopstore.store.direct import DirectRegistry
from vopstore.store.info import TaskInfo, VersionInfo
from vopstore.store.open import open_remote, open_store
from vopstore.store.registry import Registry
from vopstore.store.sync import copy_version, pull, push

__all__ = ["BlobCache", "DirectRegistry", "Registry", "TaskInfo", "VersionInfo", "copy_version", "open_remote",
           "open_store", "pull", "push"]
