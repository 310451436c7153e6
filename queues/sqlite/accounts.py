"""Accounts and API keys on SQLite (run on the connection thread, inside a transaction
where they write)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from queues.accounts import (
    Account,
    AccountExists,
    AccountNotFound,
    AccountSeed,
    AccountStatus,
    ApiKey,
    KeyScope,
)
from queues.sqlite.sql import A


def _account(row: tuple[object, ...]) -> Account:
    (id_, name, status, trusted, seeded, domains, pool, created, updated) = row
    return Account(
        id=str(id_),
        name=str(name),
        status=AccountStatus(str(status)),
        trusted=bool(trusted),
        config_seeded=bool(seeded),
        author_domains=tuple(json.loads(str(domains))),
        pool=None if pool is None else str(pool),
        created_at=float(created),  # type: ignore[arg-type]
        updated_at=float(updated),  # type: ignore[arg-type]
    )


def _key(row: tuple[object, ...]) -> ApiKey:
    (id_, account_id, scope, label, created, revoked, secret_hash) = row
    return ApiKey(
        id=str(id_),
        account_id=str(account_id),
        scope=KeyScope(str(scope)),
        label=str(label),
        created_at=float(created),  # type: ignore[arg-type]
        revoked_at=None if revoked is None else float(revoked),  # type: ignore[arg-type]
        secret_hash=str(secret_hash),
    )


def seed(conn: sqlite3.Connection, seeds: Sequence[AccountSeed], now: float) -> list[str]:
    """Insert the seeds that are absent; returns the ids inserted."""
    inserted: list[str] = []
    for s in seeds:
        row = conn.execute(
            A.seed_account, (s.id, json.dumps(list(s.author_domains)), s.pool, now)
        ).fetchone()
        if row is not None:
            inserted.append(row[0])
    return inserted


def create(
    conn: sqlite3.Connection,
    account_id: str,
    name: str,
    author_domains: Sequence[str],
    pool: str | None,
    trusted: bool,
    now: float,
) -> Account:
    row = conn.execute(
        A.insert_account,
        (account_id, name, int(trusted), json.dumps(list(author_domains)), pool, now),
    ).fetchone()
    if row is None:
        if by_name(conn, name) is not None:
            raise AccountExists(field="name", reason=f"an account named {name!r} exists")
        raise AccountExists(field="id", reason=f"an account with id {account_id!r} exists")
    found = by_id(conn, account_id)
    assert found is not None
    return found


def by_id(conn: sqlite3.Connection, account_id: str) -> Account | None:
    row = conn.execute(A.account_by_id, (account_id,)).fetchone()
    return None if row is None else _account(row)


def by_name(conn: sqlite3.Connection, name: str) -> Account | None:
    row = conn.execute(A.account_by_name, (name,)).fetchone()
    return None if row is None else _account(row)


def listing(conn: sqlite3.Connection, after: str | None, limit: int) -> list[Account]:
    return [_account(r) for r in conn.execute(A.list_accounts, (after or "", limit))]


def rename(conn: sqlite3.Connection, account_id: str, name: str, now: float) -> Account:
    other = by_name(conn, name)
    if other is not None and other.id != account_id:
        raise AccountExists(field="name", reason=f"an account named {name!r} exists")
    if conn.execute(A.rename_account, (account_id, name, now)).rowcount == 0:
        raise AccountNotFound(field="id", reason=f"no account {account_id!r}")
    found = by_id(conn, account_id)
    assert found is not None
    return found


def set_status(
    conn: sqlite3.Connection, account_id: str, status: AccountStatus, now: float
) -> Account:
    if conn.execute(A.set_account_status, (account_id, status.value, now)).rowcount == 0:
        raise AccountNotFound(field="id", reason=f"no account {account_id!r}")
    found = by_id(conn, account_id)
    assert found is not None
    return found


def insert_key(conn: sqlite3.Connection, key: ApiKey) -> None:
    if by_id(conn, key.account_id) is None:
        raise AccountNotFound(field="account_id", reason=f"no account {key.account_id!r}")
    conn.execute(
        A.insert_key,
        (key.id, key.account_id, key.scope.value, key.label, key.secret_hash, key.created_at),
    )


def key_by_id(conn: sqlite3.Connection, key_id: str) -> ApiKey | None:
    row = conn.execute(A.key_by_id, (key_id,)).fetchone()
    return None if row is None else _key(row)


def keys_of(conn: sqlite3.Connection, account_id: str) -> list[ApiKey]:
    return [_key(r) for r in conn.execute(A.keys_of_account, (account_id,))]


def revoke(conn: sqlite3.Connection, account_id: str, key_id: str, now: float) -> bool:
    return bool(conn.execute(A.revoke_key, (key_id, account_id, now)).rowcount)
