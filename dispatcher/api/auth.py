"""Who is asking: an account's API key (scope `send` or `full`) or the operators' admin key.

Tokens come as `Authorization: Bearer <token>`. A key is found by the id inside its token
and its hash compared in constant time; lookups are cached for `ttl` seconds (so most
requests never ask the store), which is also how long a revoked key may keep working.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from dispatcher.api.problems import ApiProblem
from queues.accounts import Account, ApiKey, KeyScope, token_key_id, token_matches
from queues.protocol import Queue

_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="maildispatch"'}


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. `account` is None for the admin key."""

    account: Account | None
    key: ApiKey | None

    @property
    def admin(self) -> bool:
        return self.account is None

    @property
    def rate_key(self) -> str:
        return "admin" if self.key is None else self.key.id

    def require(self, scope: KeyScope) -> None:
        """403 unless the key's scope covers `scope` (the admin key covers both)."""
        if self.key is not None and scope is KeyScope.FULL and self.key.scope is not KeyScope.FULL:
            raise ApiProblem(403, "insufficient_scope", "this API key may only send")

    def require_admin(self) -> None:
        if not self.admin:
            raise ApiProblem(403, "admin_only", "this endpoint needs the admin key")

    def owns(self, account_id: str) -> bool:
        """The admin key sees every account; an account key only its own."""
        return self.account is None or self.account.id == account_id


class Authenticator:
    """Resolves bearer tokens to principals, with a short cache of store lookups."""

    def __init__(
        self, queue: Queue, admin_key: str, ttl: float = 5.0, max_entries: int = 100_000
    ) -> None:
        self._queue = queue
        self._admin = admin_key.encode() if admin_key else b""
        self._ttl = ttl
        self._cache: dict[str, tuple[float, ApiKey | None, Account | None]] = {}
        self._max = max_entries

    async def principal(self, authorization: str | None) -> Principal:
        """401 unless the header carries a valid, unrevoked key of an existing account."""
        if not authorization or not authorization[:7].lower() == "bearer ":
            raise ApiProblem(
                401, "unauthorized", "send Authorization: Bearer <API key>", headers=_UNAUTHORIZED
            )
        token = authorization[7:].strip()
        key_id = token_key_id(token)
        if key_id is None:
            if self._admin and hmac.compare_digest(token.encode("utf-8", "replace"), self._admin):
                return Principal(None, None)
            raise ApiProblem(401, "unauthorized", "unknown API key", headers=_UNAUTHORIZED)
        key, account = await self._lookup(key_id)
        if key is None or account is None or not key.active or not token_matches(token, key):
            raise ApiProblem(
                401, "unauthorized", "unknown or revoked API key", headers=_UNAUTHORIZED
            )
        return Principal(account, key)

    async def _lookup(self, key_id: str) -> tuple[ApiKey | None, Account | None]:
        now = time.monotonic()
        hit = self._cache.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        key = await self._queue.get_api_key(key_id)
        account = None if key is None else await self._queue.get_account(key.account_id)
        if len(self._cache) >= self._max:
            self._cache.clear()  # bounded; a full refill costs one lookup per key
        self._cache[key_id] = (now + self._ttl, key, account)
        return key, account

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached lookups (after this process changed a key or an account)."""
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)
