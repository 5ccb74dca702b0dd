"""One error hierarchy for the whole library.

Every error inherits :class:`VopstoreError` *and* the builtin that matches its
meaning, so callers can catch either (``except LookupError`` works for an
unknown task). Messages say what was expected, what arrived and what to do;
the CLI prints them as one line and exits with :attr:`VopstoreError.exit_code`.
"""

from __future__ import annotations


class VopstoreError(Exception):
    """Base class of every error vopstore raises on purpose."""

    code, http_status = "error", 500

    exit_code = 1


class InvalidRefError(VopstoreError, ValueError):
    """A ref or name does not follow ``[tenant/]task[@vN|@alias]`` and the name rules."""

    code, http_status = "invalid_ref", 422


class NotFoundError(VopstoreError, LookupError):
    """A tenant, task, version, alias, blob or method does not exist."""

    code, http_status = "not_found", 404


class TaskNotFoundError(NotFoundError):
    """The task has no versions in this store."""

    code, http_status = "task_not_found", 404


class VersionNotFoundError(NotFoundError):
    """The task exists but not that version number."""

    code, http_status = "version_not_found", 404


class AliasNotFoundError(NotFoundError):
    """The task has no alias of that name."""

    code, http_status = "alias_not_found", 404


class BlobNotFoundError(NotFoundError):
    """The blob store holds no object under that key."""

    code, http_status = "blob_not_found", 404


class UnknownMethodError(NotFoundError):
    """No prompt method is registered under that name."""

    code, http_status = "unknown_method", 404


class InvalidCheckpointError(VopstoreError, ValueError):
    """A file is not a valid vopstore prompt-set checkpoint."""

    code, http_status = "invalid_checkpoint", 422


class BlobIntegrityError(VopstoreError, ValueError):
    """Stored bytes are corrupt: they do not hash to their digest, or a stored file is malformed.

    Named apart from SQLAlchemy's ``IntegrityError`` (a unique-key race), which the store also handles.
    """

    code, http_status = "integrity", 422


class ConflictError(VopstoreError, ValueError):
    """The operation would contradict what is stored (same version, other digest; alias in use)."""

    code, http_status = "conflict", 409


class BackboneMismatchError(VopstoreError, ValueError):
    """A prompt set was trained on another backbone than the one it is being loaded onto."""

    code, http_status = "backbone_mismatch", 409


class PermissionDeniedError(VopstoreError, PermissionError):
    """The caller's token does not reach that tenant or action."""

    code, http_status = "permission_denied", 403


class StoreUnavailableError(VopstoreError, ConnectionError):
    """A database, blob store or registry could not be reached."""

    code, http_status = "store_unavailable", 503


class FileMissingError(VopstoreError, FileNotFoundError):
    """A user-supplied file or folder does not exist."""

    code, http_status = "file_missing", 404


class DataError(VopstoreError, ValueError):
    """A dataset row, annotation file or video is malformed or unreadable."""

    code, http_status = "data_error", 422


class ConfigError(VopstoreError, ValueError):
    """A configuration value (method config, preset, remote, option) is invalid."""

    code, http_status = "invalid_input", 422


class AuthenticationError(PermissionDeniedError):
    """No token, or one that is malformed, unknown, expired or revoked."""

    code, http_status = "unauthenticated", 401


class QuotaExceededError(VopstoreError, PermissionError):
    """The write would take the tenant past its storage quota, or an upload is over the size limit."""

    code, http_status = "quota_exceeded", 413


class RateLimitedError(StoreUnavailableError):
    """Too many requests for one token; ``retry_after`` says how many seconds to wait."""

    code, http_status = "rate_limited", 429

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def error_for_code(code: str) -> type[VopstoreError]:
    """The error class a problem document's ``code`` stands for (VopstoreError for an unknown code)."""
    for cls in _all_subclasses(VopstoreError):
        if cls.__dict__.get("code") == code:
            return cls
    return VopstoreError


def _all_subclasses(cls: type) -> list[type]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found
