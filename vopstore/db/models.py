"""SQLAlchemy 2.0 models of the store.

A version is immutable once written (no code path updates it) and numbered per
task; an alias is the only thing that moves. Every task belongs to a tenant, and
a blob row records that a tenant's blob was (or is being) written to the blob
store: it is inserted *before* the upload, so a crash leaves a blob row without
a version (collected by gc), never a version without its blob.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, DateTime, ForeignKey, Index, Integer, MetaData, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints so that Alembic migrations and drift checks are deterministic on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    __tablename__ = "tenant"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Bytes of blobs this tenant may hold; None: no limit.
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Token(Base):
    """An API token; only its sha256 is stored, so a leaked database leaks no tokens.

    A token reads ``vop_{key_id}_{secret}``: ``key_id`` finds the row, then the
    hashes are compared in constant time. ``scope`` is read, write or admin.
    """

    __tablename__ = "token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)
    scope: Mapped[str] = mapped_column(String(16), default="write", server_default="write")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Backbone(Base):
    __tablename__ = "backbone"
    __table_args__ = (UniqueConstraint("name", "fingerprint", name="uq_backbone_name_fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)


class Task(Base):
    __tablename__ = "task"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_task_tenant_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    # Highest number ever given out: numbers are never reused, even after `rm` of the latest version,
    # and bumping it with one UPDATE is the per-task row lock that serialises concurrent adds.
    last_number: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    tenant: Mapped[Tenant] = relationship()


class Blob(Base):
    __tablename__ = "blob"
    __table_args__ = (UniqueConstraint("tenant_id", "digest", name="uq_blob_tenant_id_digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Version(Base):
    __tablename__ = "version"
    __table_args__ = (UniqueConstraint("task_id", "number", name="uq_version_task_id_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id"), index=True)
    backbone_id: Mapped[int] = mapped_column(ForeignKey("backbone.id"), index=True)
    method: Mapped[str] = mapped_column(String(64))
    method_config: Mapped[dict] = mapped_column(JSON)
    dtype: Mapped[str] = mapped_column(String(32))
    params: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    training_config: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    parent: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)

    task: Mapped[Task] = relationship()
    blob: Mapped[Blob] = relationship()
    backbone: Mapped[Backbone] = relationship()


class Alias(Base):
    __tablename__ = "alias"
    __table_args__ = (UniqueConstraint("task_id", "name", name="uq_alias_task_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("version.id"), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """One write, recorded in the transaction that made it: who, what, when, old and new value."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    task: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    old_value: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    new_value: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_audit_tenant_id_task", "tenant_id", "task"),)


class StoreIdentity(Base):
    """The store's id, written both here and in its blob store (``_vopstore/store-id``).

    Checked on every open, so that a lost, emptied or foreign database beside a
    blob store that holds another store's data is refused instead of being taken
    for an empty store (whose gc would then delete every blob). One row, id 1.
    """

    __tablename__ = "store_identity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
