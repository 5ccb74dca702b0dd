"""Who a serving request is: the registry's tenant tokens (read scope), checked by the registry.

With ``--remote https://registry`` the token is checked by the registry server
itself (``GET /v1/whoami``); with a local or database store, against that store's
token table. A positive answer is remembered for ``ttl_s`` seconds (so a revoked
or expired token stops working within that time, not per request: serving must
not put a registry round trip on every embedding).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from vopstore.errors import AuthenticationError, PermissionDeniedError


@dataclass(frozen=True)
class Caller:
    tenant: str
    name: str
    scope: str

    def allows(self, scope: str) -> bool:
        from vopstore.store.tenants import SCOPES  # that module imports SQLAlchemy; a Caller is made without it

        return SCOPES.index(self.scope) >= SCOPES.index(scope)


class TokenChecker:
    """``check(token) -> Caller`` with a short positive cache; AuthenticationError for a bad token."""

    def __init__(self, registry: str | object, ttl_s: float = 10.0, clock=time.monotonic) -> None:
        self.registry, self.ttl_s, self.clock = registry, ttl_s, clock
        self._seen: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def check(self, token: str | None) -> Caller:
        if not token:
            raise AuthenticationError("no token: send 'Authorization: Bearer vop_...' (a registry token of your tenant)")
        now = self.clock()
        with self._lock:
            hit = self._seen.get(token)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        caller = self._ask(token)
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[token] = (now, caller)
        return caller

    def _ask(self, token: str) -> Caller:
        from vopstore.store.http import HttpRegistry  # httpx: only when the tokens live on a registry server

        if isinstance(self.registry, str):  # a registry server's URL: it checks its own tokens
            client = HttpRegistry(self.registry, token, retries=2)
            try:
                who = client.identity
            except PermissionDeniedError as exc:
                raise AuthenticationError(str(exc).split(": ", 1)[-1]) from None
            finally:
                client.close()
            return Caller(who["tenant"], who["token"], who["scope"])
        who = self.registry.authenticate(token)
        return Caller(who.tenant, who.name, who.scope)
