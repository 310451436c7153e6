"""The event outbox on SQLite: outcome events inside the outcome transaction, other events
in batches, and reads for consumers (`maildispatch events tail`, the relay)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from queues.protocol import EVENT_STATES, Event, Lease, OutcomeRecord
from queues.sqlite.sql import Q
from queues.text import storable, storable_json

PRUNE_BATCH = 500


def outcome_data(o: OutcomeRecord) -> str:
    """The JSON object of an outcome's event (keys with no value left out)."""
    data: dict[str, object] = {
        "reply_code": o.reply_code,
        "reply_text": storable(o.reply_text),
        "source_ip": storable(o.source_ip),
        "platform_domain": storable(o.platform_domain),
        "mx_host": storable(o.mx_host),
        "category": storable(o.category),
        "retry_at": o.retry_at if o.state.value == "deferred" else None,
    }
    return json.dumps({k: v for k, v in data.items() if v is not None}, separators=(",", ":"))


def write_outcome_events(
    conn: sqlite3.Connection, lease: Lease, outcomes: Sequence[OutcomeRecord], now: float
) -> None:
    """One event per outcome that is about to apply (same fence); call before the update."""
    rows = [
        (now, f"message.{o.state.value}", outcome_data(o), o.id, lease.worker_id, lease.epoch)
        for o in outcomes
        if o.state in EVENT_STATES
    ]
    if rows:
        conn.executemany(Q.outcome_event, rows)


def write_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    """Insert events (inside the caller's transaction)."""
    rows = [
        (
            e.at,
            e.kind,
            e.message_id,
            e.account,
            json.dumps(storable_json(dict(e.data)), default=str),
        )
        for e in events
    ]
    if rows:
        conn.executemany(Q.insert_event, rows)


def read(conn: sqlite3.Connection, after: int, limit: int) -> list[Event]:
    """Events with seq > `after`, oldest first."""
    return [
        Event(
            kind=kind,
            at=at,
            data=json.loads(data),
            message_id=mid,
            account=acct,
            seq=seq,
            campaign=campaign,
            metadata=metadata,
        )
        for seq, at, kind, mid, acct, data, campaign, metadata in conn.execute(
            Q.read_events, (after, limit)
        )
    ]


def last_seq(conn: sqlite3.Connection) -> int:
    """The largest event seq, 0 when there is none."""
    return int(conn.execute(Q.last_event_seq).fetchone()[0])


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Delete up to PRUNE_BATCH events older than `before`."""
    return int(conn.execute(Q.prune_events, (before, PRUNE_BATCH)).rowcount)
