"""What the store says about a version and a task: plain frozen dataclasses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class VersionInfo:
    """One immutable version of a task's prompt set, as recorded in a store."""

    tenant: str
    task: str
    number: int
    digest: str
    size: int
    method: str
    params: int
    backbone_name: str
    backbone_fingerprint: str
    metrics: dict | None = None
    training_config: dict | None = None
    message: str | None = None
    created_at: datetime | None = None
    created_by: str | None = None
    aliases: tuple[str, ...] = ()
    method_config: dict = field(default_factory=dict)
    dtype: str = "float32"
    parent: str | None = None

    @property
    def ref(self) -> str:
        """The canonical ref, e.g. ``local/lsmdc@v1``."""
        return f"{self.tenant}/{self.task}@v{self.number}"

    def to_dict(self) -> dict:
        """A JSON-ready dict (``ref`` included, timestamps as ISO 8601)."""
        out = asdict(self)
        out["ref"] = self.ref
        out["aliases"] = list(self.aliases)
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return out


@dataclass(frozen=True)
class TaskInfo:
    """A task and a summary of its versions."""

    tenant: str
    name: str
    versions: int
    latest: int | None
    aliases: dict[str, int] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.tenant}/{self.name}"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ref"] = self.ref
        return out
