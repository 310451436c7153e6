"""Claim, committing mark and outcomes: the per-batch writes of the hot path.

Every function runs inside a write transaction on the connection thread, and checks the
lease first: holding the write lock, a current lease stays current until the commit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from queues.deliverability import ClaimSkip, utc_day
from queues.errors import InvalidQueueInput, LeaseLost
from queues.protocol import (
    OUTCOME_STATES,
    ClaimedMessage,
    Event,
    Lease,
    MessageState,
    OutcomeRecord,
)
from queues.sqlite.events import write_events, write_outcome_events
from queues.sqlite.leases import is_current
from queues.sqlite.sql import Q
from queues.sqlite.suppressions import hold_in_flight, settle, settle_cancelled
from queues.text import storable

_NEEDS_RETRY_AT = frozenset({MessageState.DEFERRED, MessageState.QUEUED})
_EXPIRES_AT = 15  # column of claim_candidates


def _expired(expires_at: float | None, now: float) -> bool:
    return expires_at is not None and expires_at <= now


def claim(
    conn: sqlite3.Connection,
    lease: Lease,
    limit: int,
    now: float,
    skip: Sequence[ClaimSkip] = (),
) -> list[ClaimedMessage]:
    """Take up to `limit` due messages, best priority then earliest due first, leaving out
    those of the providers in `skip`.

    Due messages already past `expires_at` become `failed` instead, and more are read in
    their place. Raises LeaseLost when the lease is not current.
    """
    if not is_current(conn, lease):
        raise LeaseLost(f"worker {lease.worker_id} epoch {lease.epoch} is no longer current")
    skipped = json.dumps([[k.provider, k.stream] for k in skip])
    claimed: list[ClaimedMessage] = []
    while len(claimed) < limit:
        wanted = limit - len(claimed)
        rows = conn.execute(Q.claim_candidates, (now, wanted, skipped)).fetchall()
        expired = [(now, row[0]) for row in rows if _expired(row[_EXPIRES_AT], now)]
        taken = [row for row in rows if not _expired(row[_EXPIRES_AT], now)]
        # Suppressed since enqueue (an unsubscribe during a broadcast): settled, not sent.
        suppressed = settle(conn, [row[1] for row in taken], now)
        if suppressed:
            taken = [row for row in taken if row[1] not in suppressed]
        seqs = json.dumps([row[0] for row in taken])
        conn.execute(Q.claim_take, (lease.worker_id, lease.epoch, now, seqs))
        conn.executemany(Q.expired_event, expired)
        conn.executemany(Q.claim_expire, expired)
        claimed.extend(_claimed(row, lease) for row in taken)
        if (not expired and not suppressed) or len(rows) < wanted:
            break  # nothing more is due: read again only to replace expired or suppressed ones
    return claimed


def _claimed(row: Any, lease: Lease) -> ClaimedMessage:
    return ClaimedMessage(
        id=row[1],
        account=row[2],
        author_domain=row[3],
        rcpt=row[4],
        rcpt_domain=row[5],
        verp_token=row[6],
        message_id=row[7],
        body=row[8],
        stream=row[9],
        priority=row[10],
        campaign=row[11],
        pool=row[12],
        attempts=row[13],
        enqueued_at=row[14],
        expires_at=row[_EXPIRES_AT],
        smtputf8=bool(row[16]),
        lease=lease,
        provider=row[18],
    )


def mark_committing(
    conn: sqlite3.Connection, lease: Lease, ids: Sequence[str], now: float
) -> set[str]:
    """Compare-and-set sending -> committing; the ids granted (none for a stale lease)."""
    if not ids or not is_current(conn, lease):
        return set()
    # The final gate: an address suppressed while its message was on the way is refused
    # here and the message settled `suppressed` (the session sends no dot, nothing resends);
    # so is the mail of a campaign cancelled while it was on its way (settled `cancelled`)
    # and of an account paused meanwhile (back to the queue, held).
    settle(conn, ids, now, lease.worker_id, lease.epoch)
    settle_cancelled(conn, ids, now, lease.worker_id, lease.epoch)
    hold_in_flight(conn, ids, now, lease.worker_id, lease.epoch)
    args = (json.dumps(list(ids)), lease.worker_id, lease.epoch, now)
    return {row[0] for row in conn.execute(Q.mark_committing, args)}


def release_unheld(conn: sqlite3.Connection, lease: Lease, held: Sequence[str], now: float) -> int:
    """Requeue `sending` messages of `lease` not in `held`; how many."""
    args = (lease.worker_id, lease.epoch, json.dumps(list(held)), now)
    return conn.execute(Q.release_unheld, args).rowcount


def check_outcomes(outcomes: Sequence[OutcomeRecord]) -> None:
    """Refuse the batch when any outcome is malformed (before anything is written)."""
    for outcome in outcomes:
        if outcome.state not in OUTCOME_STATES:
            raise InvalidQueueInput(
                field="state",
                reason=f"{outcome.state!r} is not an outcome state (message {outcome.id})",
            )
        if outcome.state in _NEEDS_RETRY_AT and outcome.retry_at is None:
            raise InvalidQueueInput(
                field="retry_at",
                reason=f"required for {outcome.state.value} (message {outcome.id})",
            )
        code = outcome.reply_code
        if code is not None and (type(code) is not int or not 0 <= code <= 999):
            raise InvalidQueueInput(
                field="reply_code", reason=f"expected 0..999, got {code!r} (message {outcome.id})"
            )


def record_outcomes(
    conn: sqlite3.Connection,
    lease: Lease,
    outcomes: Sequence[OutcomeRecord],
    now: float,
    events: Sequence[Event] = (),
) -> int:
    """Apply the outcomes of messages this lease still holds, with their events, and
    `events`; how many outcomes were applied.

    Attempts go to the attempt log and the daily counts first, each only for a message still
    held (the outcome's UPDATE releases it), all in the caller's transaction."""
    write_events(conn, events)
    if not outcomes or not is_current(conn, lease):
        return 0
    write_outcome_events(conn, lease, outcomes, now)
    worker, epoch = lease.worker_id, lease.epoch
    attempts = [o for o in outcomes if o.counts_attempt]
    if attempts:
        conn.executemany(
            Q.log_attempt,
            [
                (
                    o.id,
                    now if o.attempted_at is None else o.attempted_at,
                    str(o.state),
                    storable(o.source_ip),
                    storable(o.platform_domain),
                    storable(o.mx_host),
                    storable(o.provider),
                    None if o.tls is None else int(o.tls),
                    o.reply_code,
                    storable(o.reply_text),
                    storable(o.category),
                    worker,
                    epoch,
                )
                for o in attempts
            ],
        )
        conn.executemany(
            Q.count_attempt,
            [
                (
                    storable(o.source_ip),
                    storable(o.provider),
                    utc_day(now if o.attempted_at is None else o.attempted_at),
                    o.id,
                    worker,
                    epoch,
                )
                for o in attempts
                if o.source_ip and o.provider
            ],
        )
    cursor = conn.executemany(
        Q.record_outcome,
        [
            (
                str(o.state),
                1 if o.counts_attempt else 0,
                o.retry_at,
                o.reply_code,
                # Remote text: surrogates or NULs in one field must not block the batch.
                storable(o.reply_text),
                storable(o.source_ip),
                storable(o.platform_domain),
                storable(o.mx_host),
                now,
                o.id,
                worker,
                epoch,
                storable(o.provider),
            )
            for o in outcomes
        ],
    )
    return cursor.rowcount
