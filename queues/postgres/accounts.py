"""Accounts and API keys on PostgreSQL: one statement per call (see accounts.sql)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import asyncpg

from queues.accounts import (
    Account,
    AccountExists,
    AccountNotFound,
    AccountSeed,
    AccountStatus,
    ApiKey,
    KeyScope,
    NewApiKey,
    check_account_id,
    check_domains,
    check_name,
    make_key,
    new_account_id,
)
from queues.postgres.connection import Database
from queues.postgres.sql import ACCOUNT_QUERIES as Q


def _account(r: asyncpg.Record) -> Account:
    return Account(
        id=r["id"],
        name=r["name"],
        status=AccountStatus(r["status"]),
        trusted=r["trusted"],
        config_seeded=r["config_seeded"],
        author_domains=tuple(r["author_domains"]),
        pool=r["pool"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


def _key(r: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=r["id"],
        account_id=r["account_id"],
        scope=KeyScope(r["scope"]),
        label=r["label"],
        created_at=r["created_at"],
        revoked_at=r["revoked_at"],
        secret_hash=r["secret_hash"],
    )


class Accounts:
    """The account and key statements of one `PostgresQueue`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def seed(self, seeds: Sequence[AccountSeed]) -> list[str]:
        checked = [
            AccountSeed(check_account_id(s.id), check_domains(list(s.author_domains)), s.pool)
            for s in seeds
        ]
        if not checked:
            return []
        rows = await self._db.fetch(
            Q["seed_accounts"],
            [s.id for s in checked],
            [json.dumps(list(s.author_domains)) for s in checked],
            [s.pool for s in checked],
            time.time(),
        )
        return sorted(r["id"] for r in rows)

    async def create(
        self,
        name: str,
        *,
        author_domains: Sequence[str],
        pool: str | None,
        trusted: bool,
        account_id: str | None,
    ) -> Account:
        account_id = check_account_id(account_id or new_account_id())
        name = check_name(name)
        row = await self._db.fetchrow(
            Q["insert_account"],
            account_id,
            name,
            trusted,
            list(check_domains(list(author_domains))),
            pool,
            time.time(),
        )
        if row is None:
            if await self._db.fetchval(Q["account_by_name"], name) is not None:
                raise AccountExists(field="name", reason=f"an account named {name!r} exists")
            raise AccountExists(field="id", reason=f"an account with id {account_id!r} exists")
        return _account(row)

    async def get(self, account_id: str) -> Account | None:
        row = await self._db.fetchrow(Q["account_by_id"], account_id)
        return None if row is None else _account(row)

    async def find(self, ref: str) -> Account | None:
        row = await self._db.fetchrow(Q["account_by_ref"], ref)
        return None if row is None else _account(row)

    async def listing(self, after: str | None, limit: int) -> list[Account]:
        rows = await self._db.fetch(Q["list_accounts"], after or "", max(0, min(limit, 1000)))
        return [_account(r) for r in rows]

    async def rename(self, account_id: str, name: str) -> Account:
        name = check_name(name)
        try:
            row = await self._db.fetchrow(Q["rename_account"], account_id, name, time.time())
        except asyncpg.UniqueViolationError:
            raise AccountExists(field="name", reason=f"an account named {name!r} exists") from None
        if row is None:
            raise AccountNotFound(field="id", reason=f"no account {account_id!r}")
        return _account(row)

    async def set_status(self, account_id: str, status: AccountStatus) -> Account:
        row = await self._db.fetchrow(
            Q["set_account_status"], account_id, AccountStatus(status).value, time.time()
        )
        if row is None:
            raise AccountNotFound(field="id", reason=f"no account {account_id!r}")
        return _account(row)

    async def create_key(self, account_id: str, scope: KeyScope | str, label: str) -> NewApiKey:
        made = make_key(account_id, scope, label, time.time())
        k = made.key
        inserted = await self._db.fetchval(
            Q["insert_key"],
            k.id,
            k.account_id,
            k.scope.value,
            k.label,
            k.secret_hash,
            k.created_at,
        )
        if inserted is None:
            raise AccountNotFound(field="account_id", reason=f"no account {account_id!r}")
        return made

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self._db.fetchrow(Q["key_by_id"], key_id)
        return None if row is None else _key(row)

    async def keys_of(self, account_id: str) -> list[ApiKey]:
        if await self.get(account_id) is None:
            raise AccountNotFound(field="account_id", reason=f"no account {account_id!r}")
        return [_key(r) for r in await self._db.fetch(Q["keys_of_account"], account_id)]

    async def revoke(self, account_id: str, key_id: str) -> bool:
        return await self._db.fetchval(Q["revoke_key"], key_id, account_id, time.time()) is not None
