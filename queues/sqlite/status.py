"""Reads for status and tests, and the housekeeping writes (prune).

Every function runs on the connection thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from queues.deliverability import WarmupRecord, utc_day
from queues.protocol import (
    AttemptRecord,
    HeldFilter,
    HeldMessage,
    MessageRecord,
    MessageState,
    StatusCounts,
)
from queues.sqlite.sql import Q

PRUNE_BATCH = 500  # rows per delete transaction: short write locks, other writers interleave


def counts(conn: sqlite3.Connection) -> StatusCounts:
    """Counts per state, per pool and per last source IP, from one read snapshot."""
    conn.execute("BEGIN")  # one snapshot for the three queries
    try:
        by_state = {state: n for state, n in conn.execute(Q.counts_by_state)}
        by_pool = _nested(conn.execute(Q.counts_by_pool))
        by_ip = _nested(conn.execute(Q.counts_by_source_ip))
    finally:
        conn.execute("COMMIT")
    return StatusCounts(by_state=by_state, by_pool=by_pool, by_source_ip=by_ip)


def _nested(rows: sqlite3.Cursor) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for key, state, n in rows:
        out.setdefault(key, {})[state] = n
    return out


def next_due(conn: sqlite3.Connection) -> float | None:
    """Earliest due time of the queued and deferred messages."""
    value = conn.execute(Q.next_due).fetchone()[0]
    return None if value is None else float(value)


def active_count(conn: sqlite3.Connection) -> int:
    """Messages in queued, deferred, sending or committing."""
    return int(conn.execute(Q.active_count).fetchone()[0])


def get(conn: sqlite3.Connection, ids: Sequence[str]) -> list[MessageRecord]:
    """Records of the given ids that exist, in the order asked."""
    if not ids:
        return []
    found = {}
    for row in conn.execute(Q.get_messages, (json.dumps(list(ids)),)):
        found[row[0]] = MessageRecord(
            id=row[0],
            account=row[1],
            idempotency_key=row[2],
            state=MessageState(row[3]),
            attempts=row[4],
            rcpt=row[5],
            last_reply_code=row[6],
            last_reply_text=row[7],
            source_ip=row[8],
            platform_domain=row[9],
            provider=row[10],
        )
    return [found[i] for i in dict.fromkeys(ids) if i in found]


def prune_messages(conn: sqlite3.Connection, before: float) -> int:
    """Delete up to PRUNE_BATCH finished messages last updated before `before`."""
    return int(conn.execute(Q.prune_messages, (before, PRUNE_BATCH)).rowcount)


def prune_keys(conn: sqlite3.Connection, before: float) -> int:
    """Delete up to PRUNE_BATCH idempotency keys created before `before`."""
    return int(conn.execute(Q.prune_keys, (before, PRUNE_BATCH)).rowcount)


def _held_args(which: HeldFilter) -> tuple[object, ...]:
    ids = json.dumps(list(which.ids)) if which.ids is not None else None
    return (which.account, which.campaign, which.stream, which.held_before, ids)


def held(conn: sqlite3.Connection, which: HeldFilter, limit: int) -> list[HeldMessage]:
    """Held messages matching `which`, longest held first."""
    return [HeldMessage(*row) for row in conn.execute(Q.held, (*_held_args(which), limit))]


def held_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute(Q.held_count).fetchone()[0])


def release_held(conn: sqlite3.Connection, which: HeldFilter, now: float) -> int:
    """Queue the matching held messages again, each with its `message.released` event."""
    rows = conn.execute(Q.release_held, (*_held_args(which), now)).fetchall()
    conn.executemany(
        Q.insert_event,
        [
            (now, "message.released", msg_id, account,
             json.dumps({"reason": "held_released", "resends": resends}))
            for msg_id, account, resends in rows
        ],
    )  # fmt: skip
    return len(rows)


def resolve_held(
    conn: sqlite3.Connection, which: HeldFilter, state: MessageState, now: float
) -> int:
    """Settle the matching held messages as `state`, each with its `message.resolved` event."""
    rows = conn.execute(Q.resolve_held, (*_held_args(which), state.value, now)).fetchall()
    conn.executemany(
        Q.insert_event,
        [
            (now, "message.resolved", msg_id, account,
             json.dumps({"reason": "held_resolved", "state": state.value}))
            for msg_id, account in rows
        ],
    )  # fmt: skip
    return len(rows)


def daily_counts(conn: sqlite3.Connection, day: int) -> dict[tuple[str, str], int]:
    """(source IP, provider) -> count on UTC day `day`."""
    return {(ip, provider): n for ip, provider, n in conn.execute(Q.daily_counts, (day,))}


def warmup_progress(conn: sqlite3.Connection) -> list[WarmupRecord]:
    return [WarmupRecord(*row) for row in conn.execute(Q.warmup_progress)]


def save_warmup_progress(
    conn: sqlite3.Connection, records: Sequence[WarmupRecord], now: float
) -> None:
    conn.executemany(
        Q.save_warmup, [(r.address, r.schedule, r.day, r.on_day, now) for r in records]
    )


def attempts(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, list[AttemptRecord]]:
    """The attempt log of each id, oldest first ([] for an id without attempts)."""
    out: dict[str, list[AttemptRecord]] = {i: [] for i in ids}
    if not ids:
        return out
    for row in conn.execute(Q.attempts_of, (json.dumps(list(ids)),)):
        mid, at, state, ip, domain, mx, provider, tls, code, text, category = row
        out[mid].append(
            AttemptRecord(
                at=at,
                state=MessageState(state),
                source_ip=ip,
                platform_domain=domain,
                mx_host=mx,
                tls=None if tls is None else bool(tls),
                reply_code=code,
                reply_text=text,
                category=category,
                provider=provider,
            )
        )
    return out


def attempt_counts(conn: sqlite3.Connection, since: float) -> dict[tuple[str, str], int]:
    return {(ip, provider): n for ip, provider, n in conn.execute(Q.attempt_counts, (since,))}


def prune_attempts(conn: sqlite3.Connection, before: float) -> int:
    """Delete up to PRUNE_BATCH attempts logged before `before` (and, with the first batch,
    the daily counts of the days before it)."""
    n = int(conn.execute(Q.prune_attempts, (before, PRUNE_BATCH)).rowcount)
    if n < PRUNE_BATCH:
        conn.execute(Q.prune_daily_counts, (utc_day(before),))
    return n
