"""The audit log: every write (add, push, tag, untag, rm, token create/revoke), recorded in its own transaction.

An entry is written by the same transaction as the change it describes, so the
log and the state can never disagree: a rolled-back write leaves no entry, and
a committed one always has its entry.
"""

from __future__ import annotations

from sqlalchemy import select

from vopstore.db.models import AuditEntry, Tenant
from vopstore.store.sql import as_utc

MAX_ACTOR_LENGTH = 200  # AuditEntry.actor


def record(session, tenant_id: int, action: str, actor: str | None, *, task: str | None = None,
           old: dict | None = None, new: dict | None = None) -> None:
    """Add one entry to the session's transaction."""
    session.add(AuditEntry(tenant_id=tenant_id, task=task, action=action, actor=(actor or "")[:MAX_ACTOR_LENGTH] or None,
                           old_value=old, new_value=new))


def entries(session, tenant: str, task: str | None = None, limit: int | None = None) -> list[dict]:
    """The tenant's entries (of one task when given), oldest first; the newest ``limit`` when given."""
    query = (select(AuditEntry).join(Tenant, AuditEntry.tenant_id == Tenant.id).where(Tenant.name == tenant)
             .order_by(AuditEntry.id.desc()))
    if task is not None:
        query = query.where(AuditEntry.task == task)
    if limit is not None:
        query = query.limit(limit)
    rows = list(session.scalars(query))
    return [_as_dict(row, tenant) for row in reversed(rows)]


def _as_dict(row: AuditEntry, tenant: str) -> dict:
    return {"id": row.id, "at": as_utc(row.created_at).isoformat(), "tenant": tenant, "task": row.task,
            "action": row.action, "actor": row.actor, "old": row.old_value, "new": row.new_value}
