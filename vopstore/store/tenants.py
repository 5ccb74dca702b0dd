"""Tenants and API tokens: scoped (read < write < admin), expiring, revocable; only a token's sha256 is stored.

A token reads ``vop_{key_id}_{secret}``. ``key_id`` finds its row; the sha256
of the whole token is then compared with the stored one in constant time, so
neither a lookup nor a comparison leaks how much of a guess was right. A hash
lifted from the database is not a token: hashing it again gives another hash.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from vopstore.db.models import Blob, Task, Tenant, Token, utcnow
from vopstore.errors import AuthenticationError, ConfigError, ConflictError, NotFoundError, PermissionDeniedError
from vopstore.refs import validate_name
from vopstore.store import audit, sql

SCOPES = ("read", "write", "admin")  # each includes the ones before it
LAST_USED_RESOLUTION = timedelta(seconds=60)  # write last_used_at at most once a minute per token
_TOKEN = re.compile(r"vop_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class TokenIdentity:
    """Who a request is: the token's tenant, name and scope."""

    tenant: str
    name: str
    scope: str
    key_id: str

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    @property
    def actor(self) -> str:
        return f"{self.tenant}:token:{self.name}"


def parse_duration(text: str | None) -> float | None:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` -> seconds; None or ``never`` -> None."""
    if text is None or str(text).strip().lower() in ("", "never", "none"):
        return None
    match = _DURATION.fullmatch(str(text).strip().lower())
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)] if match else math.nan
    if not math.isfinite(seconds) or seconds <= 0 or seconds > 100 * 365 * 86400:
        raise ConfigError(f"expiry {text!r} is not a duration; use e.g. 30d, 12h, 90m or never")
    return seconds


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ConfigError(f"unknown token scope {scope!r}; use one of {', '.join(SCOPES)}")
    return scope


class TenantsMixin:
    """Mixed into DirectRegistry; uses its ``_session``, ``_retrying``, ``tenant`` scope and ``actor``."""

    def create_tenant(self, name: str, quota_bytes: int | None = None) -> str:
        """Create tenant ``name`` (idempotent; sets its quota when given); only an unscoped store may."""
        self._require_admin("create tenants")
        validate_name(name, "tenant")
        if quota_bytes is not None and (not isinstance(quota_bytes, int) or quota_bytes < 0):
            raise ConfigError(f"quota must be a whole number of bytes >= 0, got {quota_bytes!r}")

        def write(session):
            row = sql.get_or_create(session, Tenant, name=name)
            if quota_bytes is not None:
                row.quota_bytes = quota_bytes

        self._retrying(lambda: self._in_write(write))
        return name

    def list_tenants(self) -> list[dict]:
        """Every tenant with its task count, stored bytes and quota; only an unscoped store may."""
        self._require_admin("list tenants")
        with self._session() as session:
            used = dict(session.execute(select(Blob.tenant_id, func.sum(Blob.size)).group_by(Blob.tenant_id)).all())
            tasks = dict(session.execute(select(Task.tenant_id, func.count(Task.id)).group_by(Task.tenant_id)).all())
            rows = session.scalars(select(Tenant).order_by(Tenant.name)).all()
            return [{"name": t.name, "created_at": sql.as_utc(t.created_at).isoformat(), "tasks": tasks.get(t.id, 0),
                     "stored_bytes": int(used.get(t.id) or 0), "quota_bytes": t.quota_bytes} for t in rows]

    def create_token(self, tenant: str, name: str = "default", scope: str = "write",
                     expires_in_s: float | None = None) -> str:
        """Create an API token for ``tenant`` and return it (the only time it is seen); only its hash is stored.

        An unscoped store may create tokens for any tenant (creating the tenant); a
        handle scoped to a tenant only for its own. A name is unique among the
        tenant's live (unrevoked, unexpired) tokens.
        """
        self._require_own(tenant, "create tokens")
        validate_name(name, "token name")
        check_scope(scope)
        if self.tenant is None:
            self.create_tenant(tenant)
        key_id, token = _new_token()
        now = utcnow()
        expires = now + timedelta(seconds=expires_in_s) if expires_in_s is not None else None

        def write(session):
            tenant_row = session.scalars(select(Tenant).where(Tenant.name == tenant)).first()
            if tenant_row is None:
                raise NotFoundError(f"no tenant {tenant!r}; create it with 'vopstore tenant create {tenant}'")
            if _live(session, tenant_row.id, name, now):
                raise ConflictError(f"tenant {tenant!r} already has a live token named {name!r}; "
                                    "revoke it first or choose another --name")
            session.add(Token(tenant_id=tenant_row.id, name=name, token_hash=_hash(token), key_id=key_id, scope=scope,
                              created_at=now, expires_at=expires))
            audit.record(session, tenant_row.id, "token-create", self.actor,
                         new={"name": name, "scope": scope, "expires_at": expires.isoformat() if expires else None})

        self._in_write(write)
        return token

    def list_tokens(self, tenant: str) -> list[dict]:
        """The tenant's tokens: name, scope, created, expires, last used, revoked; never the token or its hash."""
        self._require_own(tenant, "list tokens")
        with self._session() as session:
            rows = session.scalars(select(Token).join(Tenant, Token.tenant_id == Tenant.id)
                                   .where(Tenant.name == tenant).order_by(Token.created_at, Token.id)).all()
            now = utcnow()
            return [{"name": t.name, "scope": t.scope, "created_at": _iso(t.created_at),
                     "expires_at": _iso(t.expires_at), "last_used_at": _iso(t.last_used_at),
                     "revoked_at": _iso(t.revoked_at), "state": _state(t, now)} for t in rows]

    def revoke_token(self, tenant: str, name: str) -> int:
        """Revoke the tenant's live tokens named ``name``; effective on the next request. Returns how many."""
        self._require_own(tenant, "revoke tokens")
        validate_name(name, "token name")
        now = utcnow()

        def write(session):
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
            ids = _live(session, tenant_id, name, now) if tenant_id is not None else []
            if not ids:
                raise NotFoundError(f"tenant {tenant!r} has no live token named {name!r}; list them with "
                                    "'vopstore token ls'")
            session.execute(update(Token).where(Token.id.in_(ids)).values(revoked_at=now))
            audit.record(session, tenant_id, "token-revoke", self.actor, old={"name": name})
            return len(ids)

        return self._in_write(write)

    def authenticate(self, token: str) -> TokenIdentity:
        """Who ``token`` is; AuthenticationError for a missing, malformed, unknown, expired or revoked token."""
        match = _TOKEN.fullmatch(token or "")
        if match is None:
            raise AuthenticationError("malformed token; tokens look like vop_<16 hex>_<secret>: "
                                      "check VOPSTORE_TOKEN or the remote's token in config.toml")
        now = utcnow()
        with self._session() as session:
            row = session.execute(select(Token, Tenant.name).join(Tenant, Token.tenant_id == Tenant.id)
                                  .where(Token.key_id == match.group(1))).first()
        # Compare even when no row matched, so an unknown key id costs the same as a wrong secret.
        stored = row[0].token_hash if row is not None else "0" * 64
        if not hmac.compare_digest(stored, _hash(token)) or row is None:
            raise AuthenticationError("invalid token; ask an administrator for a new one")
        found, tenant = row
        if found.revoked_at is not None:
            raise AuthenticationError(f"token {found.name!r} was revoked; ask an administrator for a new one")
        if found.expires_at is not None and sql.as_utc(found.expires_at) <= now:
            raise AuthenticationError(f"token {found.name!r} expired at {_iso(found.expires_at)}; "
                                      "ask an administrator for a new one")
        if found.last_used_at is None or sql.as_utc(found.last_used_at) < now - LAST_USED_RESOLUTION:
            with self._session(write=True) as session:
                session.execute(update(Token).where(Token.id == found.id).values(last_used_at=now))
        return TokenIdentity(tenant=tenant, name=found.name, scope=found.scope, key_id=found.key_id)

    def tenant_for_token(self, token: str) -> str:
        """The tenant a token belongs to; AuthenticationError (a PermissionDeniedError) for a bad token."""
        return self.authenticate(token).tenant

    def _in_write(self, fn):
        with self._session(write=True) as session:
            return fn(session)

    def _require_admin(self, what: str) -> None:
        if self.tenant is not None:
            raise PermissionDeniedError(f"a store opened as tenant {self.tenant!r} cannot {what}")

    def _require_own(self, tenant: str, what: str) -> None:
        validate_name(tenant, "tenant")
        if self.tenant is not None and tenant != self.tenant:
            raise PermissionDeniedError(f"a store opened as tenant {self.tenant!r} cannot {what} of {tenant!r}")


def _new_token() -> tuple[str, str]:
    key_id = secrets.token_hex(8)
    return key_id, f"vop_{key_id}_{secrets.token_urlsafe(32)}"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _live(session, tenant_id: int, name: str, now: datetime) -> list[int]:
    rows = session.execute(select(Token.id, Token.expires_at).where(
        Token.tenant_id == tenant_id, Token.name == name, Token.revoked_at.is_(None))).all()
    return [tid for tid, expires in rows if expires is None or sql.as_utc(expires) > now]


def _state(token: Token, now: datetime) -> str:
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and sql.as_utc(token.expires_at) <= now:
        return "expired"
    return "active"


def _iso(moment: datetime | None) -> str | None:
    return sql.as_utc(moment).isoformat() if moment is not None else None
