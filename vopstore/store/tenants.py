"""Tenants and API tokens for the direct registry; only a token's sha256 is ever stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select

from vopstore.db.models import Tenant, Token
from vopstore.errors import PermissionDeniedError
from vopstore.refs import validate_name
from vopstore.store import sql


class TenantsMixin:
    """Mixed into DirectRegistry; uses its ``_session``, ``_retrying`` and ``tenant`` scope."""

    def create_tenant(self, name: str) -> str:
        """Create tenant ``name`` (idempotent); only an unscoped store may."""
        self._require_admin("create tenants")
        validate_name(name, "tenant")
        self._retrying(lambda: self._in_write(lambda s: sql.get_or_create(s, Tenant, name=name)))
        return name

    def create_token(self, tenant: str, name: str = "default") -> str:
        """Create an API token for ``tenant`` and return it; only its sha256 is stored."""
        self._require_admin("create tokens")
        self.create_tenant(tenant)
        token = "vop_" + secrets.token_urlsafe(32)

        def write(session):
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
            session.add(Token(tenant_id=tenant_id, name=validate_name(name, "token name"), token_hash=_hash(token)))

        self._in_write(write)
        return token

    def tenant_for_token(self, token: str) -> str:
        """The tenant a token belongs to; PermissionDeniedError for an unknown or revoked token."""
        with self._session() as session:
            tenant = session.scalar(select(Tenant.name).join(Token, Token.tenant_id == Tenant.id)
                                    .where(Token.token_hash == _hash(token), Token.revoked_at.is_(None)))
        if tenant is None:
            raise PermissionDeniedError("invalid or revoked token; ask an administrator for a new one")
        return tenant

    def _in_write(self, fn):
        with self._session(write=True) as session:
            return fn(session)

    def _require_admin(self, what: str) -> None:
        if self.tenant is not None:
            raise PermissionDeniedError(f"a store opened as tenant {self.tenant!r} cannot {what}")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
