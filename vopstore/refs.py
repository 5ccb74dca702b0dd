"""The one parser for version references: ``[tenant/]task[@vN|@alias]``.

Names are guarded before they reach a filesystem path, a bucket key or SQL:
lowercase ``[a-z0-9][a-z0-9._-]{0,63}``, never containing ``..``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vopstore.errors import InvalidRefError

DEFAULT_TENANT = "local"
LATEST = "latest"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_VERSION = re.compile(r"v([1-9][0-9]{0,8})")
_VERSION_LIKE = re.compile(r"v-?[0-9]+")  # what reads as a version number: never an alias name
MAX_VERSION = 999_999_999


def validate_name(name: str, kind: str = "name") -> str:
    """Return ``name`` if it is a valid tenant, task or alias name, else raise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidRefError(
            f"invalid {kind} {name!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'"
        )
    return name


def validate_alias(alias: str) -> str:
    """Return ``alias`` if it can name an alias: a valid name that is not ``latest`` or ``vN``."""
    validate_name(alias, "alias")
    if alias == LATEST or _VERSION_LIKE.fullmatch(alias):
        raise InvalidRefError(
            f"alias {alias!r} is reserved: 'latest' and 'vN' always mean versions; pick another name"
        )
    return alias


@dataclass(frozen=True)
class Ref:
    """A parsed reference. Exactly one of ``version`` and ``alias`` may be set; neither means latest."""

    tenant: str
    task: str
    version: int | None = None
    alias: str | None = None

    @property
    def task_ref(self) -> str:
        """``tenant/task`` without a version."""
        return f"{self.tenant}/{self.task}"

    @property
    def is_latest(self) -> bool:
        return self.version is None and self.alias is None

    def with_version(self, version: int) -> Ref:
        return Ref(self.tenant, self.task, version=version)

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.task_ref}@v{self.version}"
        if self.alias is not None:
            return f"{self.task_ref}@{self.alias}"
        return self.task_ref


def parse_ref(text: str, default_tenant: str = DEFAULT_TENANT) -> Ref:
    """Parse ``[tenant/]task[@vN|@alias]``; ``@latest`` is the same as no suffix.

    Raises:
        InvalidRefError: with the reason, for anything that is not a well-formed ref.
    """
    if not isinstance(text, str) or not text or len(text) > 200:
        raise InvalidRefError(f"invalid ref {text!r}: expected [tenant/]task[@vN|@alias], e.g. acme/lsmdc@prod")
    body, at, selector = text.partition("@")
    if at and not selector:
        raise InvalidRefError(f"invalid ref {text!r}: nothing after '@'; use task@vN or task@alias")
    parts = body.split("/")
    if len(parts) > 2:
        raise InvalidRefError(f"invalid ref {text!r}: at most one '/', between tenant and task")
    tenant, task = (parts if len(parts) == 2 else [default_tenant, parts[0]])
    validate_name(tenant, "tenant")
    validate_name(task, "task")
    if not at or selector == LATEST:
        return Ref(tenant, task)
    version = _VERSION.fullmatch(selector)
    if version:
        return Ref(tenant, task, version=int(version.group(1)))
    if _VERSION_LIKE.fullmatch(selector):
        raise InvalidRefError(f"invalid ref {text!r}: {_version_problem(selector[1:])}")
    return Ref(tenant, task, alias=validate_alias(selector))


def _version_problem(digits: str) -> str:
    """Why ``v{digits}`` (digits with an optional leading '-') is not a version number."""
    number = int(digits)
    if number < 1:
        return "version numbers are whole numbers from v1 up"
    if number > MAX_VERSION:
        return f"version number v{number} is out of range (at most v{MAX_VERSION})"
    return f"write version numbers without leading zeros (v{number})"


def parse_task(text: str, default_tenant: str = DEFAULT_TENANT) -> Ref:
    """Parse ``[tenant/]task`` with no version part."""
    ref = parse_ref(text, default_tenant)
    if "@" in text:
        raise InvalidRefError(f"expected a task without '@...', got {text!r}")
    return ref
