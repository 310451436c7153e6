"""Suppression lists on SQLite (run on the connection thread, inside a transaction where
they write), and the settling of messages to suppressed addresses."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from queues.sqlite.sql import S
from queues.suppressions import Suppression, SuppressionReason


def _entry(row: tuple[object, ...]) -> Suppression:
    account, address, reason, source, created = row
    return Suppression(
        account=str(account),
        address=str(address),
        reason=SuppressionReason(str(reason)),
        source=str(source),
        created_at=float(created),  # type: ignore[arg-type]
    )


def put(conn: sqlite3.Connection, entries: Sequence[Suppression]) -> int:
    conn.executemany(
        S.put,
        [(e.account, e.address, e.reason.value, e.source, e.created_at) for e in entries],
    )
    return len(entries)


def get(conn: sqlite3.Connection, account: str, address: str) -> Suppression | None:
    row = conn.execute(S.get, (account, address)).fetchone()
    return None if row is None else _entry(row)


def delete(conn: sqlite3.Connection, account: str, address: str) -> bool:
    return bool(conn.execute(S.delete, (account, address)).rowcount)


def listing(
    conn: sqlite3.Connection, account: str, after: str | None, limit: int
) -> list[Suppression]:
    return [_entry(r) for r in conn.execute(S.listing, (account, after or "", limit))]


def settle(
    conn: sqlite3.Connection,
    ids: Sequence[str],
    now: float,
    worker_id: str | None = None,
    epoch: int | None = None,
) -> set[str]:
    """Messages among `ids` whose recipient is suppressed become `suppressed`, each with
    its event; the ids settled. Waiting messages, or with `worker_id` those `sending`
    under that lease."""
    if not ids:
        return set()
    hits = [row[0] for row in conn.execute(S.hits, (json.dumps(list(ids)), worker_id, epoch))]
    if not hits:
        return set()
    args = (now, json.dumps(hits), worker_id, epoch)
    conn.execute(S.settle_event, args)
    return {row[0] for row in conn.execute(S.settle, args)}
