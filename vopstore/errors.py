"""One error hierarchy for the whole library.

Every error inherits :class:`VopstoreError` *and* the builtin that matches its
meaning, so callers can catch either (``except LookupError`` works for an
unknown task). Messages say what was expected, what arrived and what to do;
the CLI prints them as one line and exits with :attr:`VopstoreError.exit_code`.
"""

from __future__ import annotations


class VopstoreError(Exception):
    """Base class of every error vopstore raises on purpose."""

    exit_code = 1


class InvalidRefError(VopstoreError, ValueError):
    """A ref or name does not follow ``[tenant/]task[@vN|@alias]`` and the name rules."""


class NotFoundError(VopstoreError, LookupError):
    """A tenant, task, version, alias, blob or method does not exist."""


class TaskNotFoundError(NotFoundError):
    """The task has no versions in this store."""


class VersionNotFoundError(NotFoundError):
    """The task exists but not that version number."""


class AliasNotFoundError(NotFoundError):
    """The task has no alias of that name."""


class BlobNotFoundError(NotFoundError):
    """The blob store holds no object under that key."""


class UnknownMethodError(NotFoundError):
    """No prompt method is registered under that name."""


class InvalidCheckpointError(VopstoreError, ValueError):
    """A file is not a valid vopstore prompt-set checkpoint."""


class IntegrityError(VopstoreError, ValueError):
    """Stored bytes do not hash to the digest they were stored under."""


class ConflictError(VopstoreError, ValueError):
    """The operation would contradict what is stored (same version, other digest; alias in use)."""


class BackboneMismatchError(VopstoreError, ValueError):
    """A prompt set was trained on another backbone than the one it is being loaded onto."""


class PermissionDeniedError(VopstoreError, PermissionError):
    """The caller's token does not reach that tenant or action."""


class StoreUnavailableError(VopstoreError, ConnectionError):
    """A database, blob store or registry could not be reached."""


class FileMissingError(VopstoreError, FileNotFoundError):
    """A user-supplied file or folder does not exist."""


class DataError(VopstoreError, ValueError):
    """A dataset row, annotation file or video is malformed or unreadable."""


class ConfigError(VopstoreError, ValueError):
    """A configuration value (method config, preset, remote, option) is invalid."""
