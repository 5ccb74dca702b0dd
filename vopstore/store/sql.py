"""Queries shared by the direct registry: lookups that raise the right error, and rows -> VersionInfo."""

from __future__ import annotations

import functools
from datetime import datetime, timezone

from sqlalchemy import bindparam, select

from vopstore.db.models import Alias, Backbone, Blob, Task, Tenant, Version, utcnow
from vopstore.errors import AliasNotFoundError, TaskNotFoundError, VersionNotFoundError
from vopstore.refs import Ref
from vopstore.store.info import VersionInfo


def task_id(session, tenant: str, task: str) -> int | None:
    return session.scalar(select(Task.id).join(Tenant, Task.tenant_id == Tenant.id)
                          .where(Tenant.name == tenant, Task.name == task))


def require_task_id(session, ref: Ref, where: str) -> int:
    found = task_id(session, ref.tenant, ref.task)
    if found is None:
        raise task_not_found(ref, where)
    return found


def task_not_found(ref: Ref, where: str) -> TaskNotFoundError:
    """The one answer for a missing task (the registry server gives it for other tenants' tasks too)."""
    return TaskNotFoundError(f"no task {ref.task_ref} in {where}; list tasks with 'vopstore ls'")


def version_id(session, ref: Ref, where: str) -> int:
    """The id of the version ``ref`` names (by number, alias, or latest)."""
    tid = require_task_id(session, ref, where)
    if ref.version is not None:
        found = session.scalar(select(Version.id).where(Version.task_id == tid, Version.number == ref.version))
        if found is None:
            raise VersionNotFoundError(f"{ref} does not exist in {where} (versions: {_numbers(session, tid)})")
    elif ref.alias is not None:
        found = session.scalar(select(Alias.version_id).where(Alias.task_id == tid, Alias.name == ref.alias))
        if found is None:
            names = ", ".join(session.scalars(select(Alias.name).where(Alias.task_id == tid))) or "none"
            raise AliasNotFoundError(
                f"{ref.task_ref} has no alias {ref.alias!r} (aliases: {names}); set one with 'vopstore tag'")
    else:
        found = session.scalar(select(Version.id).where(Version.task_id == tid)
                               .order_by(Version.number.desc()).limit(1))
        if found is None:
            raise VersionNotFoundError(f"{ref.task_ref} has no versions in {where}; add one with 'vopstore add'")
    return found


def find_info(conn, ref: Ref) -> VersionInfo | None:
    """The version ``ref`` names in two indexed statements, or None when there is none (no error: see version_id).

    Resolve is the hot read of every load and pull: one SELECT that joins tenant, task, the
    selector, blob and backbone, then the version's aliases. ``conn`` may be a Core connection,
    which skips the ORM's per-row work.
    """
    kind, params = "latest", {"tenant": ref.tenant, "task": ref.task}
    if ref.version is not None:
        kind, params["number"] = "number", ref.version
    elif ref.alias is not None:
        kind, params["alias"] = "alias", ref.alias
    row = conn.execute(_resolve_statement(kind), params).first()
    if row is None:
        return None
    aliases = conn.execute(_aliases_statement(), {"version_id": row.id}).scalars().all()
    return _row_info(row, tuple(aliases))


@functools.cache
def _resolve_statement(kind: str):
    """Built once per selector kind (number, alias, latest): later calls reuse the compiled statement."""
    query = (select(Version.id, Version.number, Version.method, Version.params, Version.metrics,
                    Version.training_config, Version.message, Version.created_at, Version.created_by,
                    Version.method_config, Version.dtype, Version.parent, Task.name.label("task"),
                    Tenant.name.label("tenant"), Blob.digest, Blob.size, Backbone.name.label("backbone_name"),
                    Backbone.fingerprint.label("backbone_fingerprint"))
             .select_from(Version).join(Task, Version.task_id == Task.id).join(Tenant, Task.tenant_id == Tenant.id)
             .join(Blob, Version.blob_id == Blob.id).join(Backbone, Version.backbone_id == Backbone.id)
             .where(Tenant.name == bindparam("tenant"), Task.name == bindparam("task")))
    if kind == "number":
        return query.where(Version.number == bindparam("number"))
    if kind == "alias":
        return query.join(Alias, Alias.version_id == Version.id).where(Alias.task_id == Task.id,
                                                                       Alias.name == bindparam("alias"))
    return query.order_by(Version.number.desc()).limit(1)


@functools.cache
def _aliases_statement():
    return select(Alias.name).where(Alias.version_id == bindparam("version_id")).order_by(Alias.name)


def _row_info(row, aliases: tuple[str, ...]) -> VersionInfo:
    return VersionInfo(
        tenant=row.tenant, task=row.task, number=row.number, digest=row.digest, size=row.size, method=row.method,
        params=row.params, backbone_name=row.backbone_name, backbone_fingerprint=row.backbone_fingerprint,
        metrics=row.metrics, training_config=row.training_config, message=row.message,
        created_at=as_utc(row.created_at), created_by=row.created_by, aliases=aliases,
        method_config=row.method_config, dtype=row.dtype, parent=row.parent,
    )


def _numbers(session, tid: int) -> str:
    numbers = list(session.scalars(select(Version.number).where(Version.task_id == tid).order_by(Version.number)))
    return ", ".join(f"v{n}" for n in numbers) or "none"


def load_infos(session, *conditions) -> list[VersionInfo]:
    """VersionInfo for every version matching ``conditions``, ordered by tenant, task, number."""
    query = (select(Version, Task.name, Tenant.name, Blob.digest, Blob.size, Backbone.name, Backbone.fingerprint)
             .join(Task, Version.task_id == Task.id).join(Tenant, Task.tenant_id == Tenant.id)
             .join(Blob, Version.blob_id == Blob.id).join(Backbone, Version.backbone_id == Backbone.id)
             .where(*conditions).order_by(Tenant.name, Task.name, Version.number))
    rows = session.execute(query).all()
    aliases: dict[int, list[str]] = {}
    if rows:
        ids = [row[0].id for row in rows]
        for vid, name in session.execute(select(Alias.version_id, Alias.name)
                                         .where(Alias.version_id.in_(ids)).order_by(Alias.name)):
            aliases.setdefault(vid, []).append(name)
    return [_info(*row, tuple(aliases.get(row[0].id, ()))) for row in rows]


def _info(v: Version, task: str, tenant: str, digest: str, size: int, bb_name: str, bb_fp: str,
          aliases: tuple[str, ...]) -> VersionInfo:
    return VersionInfo(
        tenant=tenant, task=task, number=v.number, digest=digest, size=size, method=v.method, params=v.params,
        backbone_name=bb_name, backbone_fingerprint=bb_fp, metrics=v.metrics, training_config=v.training_config,
        message=v.message, created_at=as_utc(v.created_at), created_by=v.created_by, aliases=aliases,
        method_config=v.method_config, dtype=v.dtype, parent=v.parent,
    )


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every timestamp vopstore writes is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def get_or_create(session, model, defaults: dict | None = None, **keys):
    """The row of ``model`` matching ``keys``, inserted (flushed) if missing.

    A concurrent insert of the same row surfaces as an IntegrityError at flush or
    commit; the caller's retry loop runs the transaction again and finds it.
    """
    row = session.scalars(select(model).filter_by(**keys)).first()
    if row is None:
        row = model(**keys, **(defaults or {}))
        session.add(row)
        session.flush()
    return row


__all__ = ["task_id", "require_task_id", "version_id", "find_info", "load_infos", "get_or_create", "as_utc", "utcnow"]
