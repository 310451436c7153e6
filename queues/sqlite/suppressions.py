"""Suppression lists on SQLite (run on the connection thread, inside a transaction where
they write), and the settling of messages to suppressed addresses."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from queues.accounts import HOLD_OFFSET
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


def record_cancel(conn: sqlite3.Connection, account: str, campaign: str, now: float) -> None:
    """Remember the cancel, so that the mark refuses the campaign's mail in flight."""
    conn.execute(S.cancel_campaign_record, (account, campaign, now))


def cancel_batch(
    conn: sqlite3.Connection,
    account: str,
    campaign: str | None,
    after: str,
    limit: int,
    now: float,
) -> tuple[int, str | None]:
    """Cancel the next `limit` waiting messages (ids above `after`), with their events;
    (how many, the cursor for the next batch or None when done)."""
    pick = S.cancel_pick_account if campaign is None else S.cancel_pick_campaign
    ids = [row[0] for row in conn.execute(pick, (account, campaign, after, limit))]
    if ids:
        batch = json.dumps(ids)
        conn.execute(S.cancel_event, (now, batch, "cancelled"))
        conn.execute(S.cancel_apply, (now, batch))
    return len(ids), (ids[-1] if len(ids) == limit else None)


def settle_cancelled(
    conn: sqlite3.Connection, ids: Sequence[str], now: float, worker_id: str, epoch: int
) -> set[str]:
    """Messages among `ids` (sending under the lease) of a campaign cancelled since they
    were enqueued become `cancelled`, with their events; the ids settled."""
    if not ids:
        return set()
    hits = [r[0] for r in conn.execute(S.cancelled_hits, (json.dumps(list(ids)), worker_id, epoch))]
    if hits:
        batch = json.dumps(hits)
        conn.execute(S.cancel_event, (now, batch, "campaign_cancelled"))
        conn.execute(S.cancel_apply, (now, batch))
    return set(hits)


def hold_batch(conn: sqlite3.Connection, account: str, after: str, limit: int) -> str | None:
    """Hold (account paused) or release (active) the account's next `limit` waiting
    messages above `after`; the cursor for the next batch, None when done."""
    ids = [row[0] for row in conn.execute(S.hold_pick, (account, after, limit))]
    if ids:
        conn.execute(S.hold_apply, (json.dumps(ids), HOLD_OFFSET, account))
    return ids[-1] if len(ids) == limit else None


def hold_new(conn: sqlite3.Connection, ids: Sequence[str]) -> None:
    """Messages just enqueued by a paused account are held."""
    if ids:
        conn.execute(S.hold_new, (json.dumps(list(ids)), HOLD_OFFSET))


def hold_in_flight(
    conn: sqlite3.Connection, ids: Sequence[str], now: float, worker_id: str, epoch: int
) -> set[str]:
    """At the mark: a paused account's messages go back to the queue, held."""
    if not ids:
        return set()
    args = (json.dumps(list(ids)), worker_id, epoch, HOLD_OFFSET, now)
    return {row[0] for row in conn.execute(S.hold_in_flight, args)}
