"""The JSON bodies of the registry API (pydantic models, so the OpenAPI schema describes them exactly)."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

DIGEST = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the checkpoint file, lowercase hex")


class Problem(BaseModel):
    """An RFC 9457 problem document; ``code`` is stable and maps onto a vopstore.errors class."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str


class WhoAmI(BaseModel):
    tenant: str
    token: str
    scope: str


class VersionOut(BaseModel):
    ref: str
    tenant: str
    task: str
    number: int
    digest: str
    size: int
    method: str
    params: int
    backbone_name: str
    backbone_fingerprint: str
    metrics: Optional[dict[str, Any]] = None
    training_config: Optional[dict[str, Any]] = None
    message: Optional[str] = None
    created_at: Optional[str] = None
    created_by: Optional[str] = None
    aliases: list[str] = []
    method_config: dict[str, Any] = {}
    dtype: str
    parent: Optional[str] = None


class VersionCreated(BaseModel):
    version: VersionOut
    created: bool


class TaskOut(BaseModel):
    ref: str
    tenant: str
    name: str
    versions: int
    latest: Optional[int] = None
    aliases: dict[str, int] = {}


class VersionCreate(BaseModel):
    """Register an uploaded blob as a version: the next number (add), or a given one (a version pushed here)."""

    model_config = ConfigDict(extra="forbid")

    digest: str = DIGEST
    number: Optional[int] = Field(None, ge=1, le=999_999_999, description="keep this number (push); omit to add")
    metrics: Optional[dict[str, Any]] = None
    training_config: Optional[dict[str, Any]] = None
    message: Optional[str] = Field(None, max_length=10_000)
    parent: Optional[str] = Field(None, max_length=200)
    created_at: Optional[str] = Field(None, max_length=64, description="ISO 8601; only with number")
    created_by: Optional[str] = Field(None, max_length=128)
    aliases: list[str] = Field([], max_length=16)


class AliasPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(max_length=80, description="the version the alias should name: vN, another alias, or latest")
    expected_digest: Optional[str] = Field(None, pattern=r"^([0-9a-f]{64})?$",
                                           description="move only if the alias still points at this digest "
                                                       "(empty: only if there is no such alias yet)")


class Uploaded(BaseModel):
    digest: str
    size: int


class UploadState(BaseModel):
    """Where a resumable upload stands (also in the ``Upload-Offset`` header)."""

    digest: str
    offset: int = Field(description="bytes the server holds: send the next chunk at this Upload-Offset")
    complete: bool = Field(description="the blob is verified and staged: register it as a version")


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: Optional[str] = Field(None, max_length=200)


class VerifyOut(BaseModel):
    ok: bool
    problems: list[str]


class GcRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: float = Field(3600.0, ge=0, le=10 * 365 * 86400)
    dry_run: bool = False
    force: bool = Field(False, description="allow a sweep of more than half of the tenant's blobs")


class GcOut(BaseModel):
    removed: int
    dry_run: bool


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    scope: str = Field("read", pattern=r"^(read|write|admin)$")
    expires: Optional[str] = Field(None, max_length=32, description="a duration such as 30d, 12h; omit for never")


class TokenCreated(BaseModel):
    name: str
    scope: str
    token: str = Field(description="shown once; only its hash is stored")


class TokenOut(BaseModel):
    name: str
    scope: str
    state: str
    created_at: Optional[str] = None
    expires_at: Optional[str] = None
    last_used_at: Optional[str] = None
    revoked_at: Optional[str] = None


class AuditOut(BaseModel):
    id: int
    at: str
    tenant: str
    task: Optional[str] = None
    action: str
    actor: Optional[str] = None
    old: Optional[dict[str, Any]] = None
    new: Optional[dict[str, Any]] = None
