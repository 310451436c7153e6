"""enqueue_many on PostgreSQL: one transaction per call, a few round trips per 20,000 rows.

Two paths with the same result:
- checked (any batch): per chunk, one INSERT of the keys ... ON CONFLICT DO NOTHING tells
  which keys are new; only those messages are copied in. Keys that existed are then looked
  up (a new statement, so a new snapshot) to return their ids or raise IdempotencyConflict.
- optimistic (large batches, a broadcast): keys are copied in by binary COPY like the rest,
  skipping the costlier speculative insertion of ON CONFLICT. If any key (or id) exists,
  the unique index refuses it, the whole transaction rolls back, and the checked path runs.

Keys go in sorted by (account, key), code point order (collation "C" in the schema), in
every transaction and across chunks, so enqueues of overlapping keys wait for one another
instead of deadlocking.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg

from queues.accounts import HOLD_OFFSET
from queues.errors import IdempotencyConflict, InvalidQueueInput
from queues.postgres.batches import (
    CONTENT_COLUMNS,
    KEY_COLUMNS,
    MESSAGE_COLUMNS,
    chunks,
    content_records,
    dedupe_messages,
    key_columns,
    key_records,
    message_records,
)
from queues.postgres.connection import Connection, Database
from queues.postgres.sql import QUERIES, SUPPRESSION_QUERIES
from queues.protocol import EnqueueResult, NewMessage

CHUNK_ROWS = 20_000
# Bodies per statement stay a few tens of megabytes.
CHUNK_BYTES = 64 * 1024 * 1024
# From this size on, a batch is assumed to be new (a broadcast) and copied in optimistically.
OPTIMISTIC_MIN = 1000


async def enqueue_each(
    db: Database, messages: Sequence[NewMessage]
) -> list[EnqueueResult | IdempotencyConflict]:
    """Like enqueue_many, but a conflicting message gets its conflict as its result and
    the others are stored (one transaction)."""
    first: dict[tuple[str, str], NewMessage] = {}
    results: list[EnqueueResult | IdempotencyConflict | None] = []
    rest: list[NewMessage] = []
    for m in messages:
        earlier = first.setdefault((m.account, m.idempotency_key), m)
        if earlier.payload_hash != m.payload_hash:
            results.append(IdempotencyConflict(m.account, m.idempotency_key, earlier.id))
        else:
            results.append(None)
            rest.append(m)
    stored = iter(await enqueue_many(db, rest, report=True))
    return [next(stored) if r is None else r for r in results]


async def enqueue_many(
    db: Database, messages: Sequence[NewMessage], *, report: bool = False
) -> list[EnqueueResult | IdempotencyConflict]:
    """Store `messages` atomically (see the Queue protocol); results in input order.

    With `report`, a message whose key is stored with another payload gets its
    IdempotencyConflict as its result instead of rolling back the batch."""
    unique, repeats = dedupe_messages(messages)
    if not unique:
        return []
    now = time.time()
    ordered = sorted(unique, key=lambda m: (m.account, m.idempotency_key))
    created: set[str] | None = None
    existing: dict[tuple[str, str], str] = {}
    if len(ordered) >= OPTIMISTIC_MIN:
        created = await _optimistic(db, ordered, now)
        if created is not None:
            await _refresh_statistics(db, len(created))
    conflicts: dict[tuple[str, str], IdempotencyConflict] = {}
    if created is None:
        created, existing, conflicts = await _checked(db, ordered, now, report)
    results: list[EnqueueResult | IdempotencyConflict] = []
    by_position: dict[int, EnqueueResult | IdempotencyConflict] = {}
    k = 0
    for i in range(len(messages)):
        result: EnqueueResult | IdempotencyConflict
        if i in repeats:
            earlier = by_position[repeats[i]]
            result = (
                earlier
                if isinstance(earlier, IdempotencyConflict)
                else EnqueueResult(earlier.id, created=False)
            )
        else:
            m = unique[k]
            k += 1
            key = (m.account, m.idempotency_key)
            if key in conflicts:
                result = conflicts[key]
            elif m.id in created:
                result = EnqueueResult(m.id, created=True)
            else:
                result = EnqueueResult(existing[(m.account, m.idempotency_key)], created=False)
        by_position[i] = result
        results.append(result)
    return results


async def _refresh_statistics(db: Database, added: int) -> None:
    """ANALYZE the hot table after a broadcast made its statistics stale.

    Autovacuum would, but only after its naptime (a minute by default); until then a claim
    planned for a small table sorts every due message instead of walking the claim index.
    """
    async with db.connection() as conn:
        if await conn.fetchval(QUERIES["hot_stats_stale"], added):
            await conn.fetch(QUERIES["analyze_hot"])


async def _copy_messages(conn: Connection, part: Sequence[NewMessage], now: float) -> None:
    await conn.copy_records("md_message", MESSAGE_COLUMNS, message_records(part, now))
    await conn.copy_records("md_content", CONTENT_COLUMNS, content_records(part, now))


async def _gates(conn: Connection, ids: list[str], now: float) -> None:
    """At the end of the transaction, with its NOTIFY: mail to a suppressed address is
    stored `suppressed` (terminal, reported, never sent); a paused account's is held."""
    await conn.fetch(SUPPRESSION_QUERIES["enqueue_gates"], ids, now, HOLD_OFFSET)


async def _optimistic(db: Database, ordered: Sequence[NewMessage], now: float) -> set[str] | None:
    """Copy everything in; None (nothing stored) when some key or id already exists."""
    try:
        async with db.connection() as conn, conn.transaction():
            for part in chunks(ordered, CHUNK_ROWS, CHUNK_BYTES):
                await conn.copy_records("md_idempotency", KEY_COLUMNS, key_records(part, now))
                await _copy_messages(conn, part, now)
            await _gates(conn, [m.id for m in ordered], now)
    except asyncpg.UniqueViolationError:
        return None
    return {m.id for m in ordered}


_Conflicts = dict[tuple[str, str], IdempotencyConflict]


async def _checked(
    db: Database, ordered: Sequence[NewMessage], now: float, report: bool
) -> tuple[set[str], dict[tuple[str, str], str], _Conflicts]:
    """Insert new keys only; returns (created ids, ids of keys stored earlier, conflicts
    when `report`)."""
    created: set[str] = set()
    existing: dict[tuple[str, str], str] = {}
    conflicts: _Conflicts = {}
    try:
        async with db.connection() as conn, conn.transaction():
            for part in chunks(ordered, CHUNK_ROWS, CHUNK_BYTES):
                row = await conn.fetchrow(QUERIES["enqueue_keys"], now, *key_columns(part))
                assert row is not None
                fresh = set(row["created"])
                created |= fresh
                new = part if len(fresh) == len(part) else [m for m in part if m.id in fresh]
                if new:
                    await _copy_messages(conn, new, now)
            if created:
                await _gates(conn, sorted(created), now)
            others = [m for m in ordered if m.id not in created]
            if others:
                existing, conflicts = await _existing_keys(conn, others, report)
    except asyncpg.UniqueViolationError as e:
        # Keys conflict through ON CONFLICT, so only a message id can collide here.
        raise InvalidQueueInput(
            field="messages.id", reason="an id of this batch is already used by another message"
        ) from e
    return created, existing, conflicts


async def _existing_keys(
    conn: Connection, others: Sequence[NewMessage], report: bool
) -> tuple[dict[tuple[str, str], str], _Conflicts]:
    """Ids of keys stored earlier; IdempotencyConflict (rolls back) on another payload,
    or with `report` the conflicts by key."""
    rows = await conn.fetch(
        QUERIES["idempotency_lookup"],
        [m.account for m in others],
        [m.idempotency_key for m in others],
    )
    found = {(r["account"], r["idempotency_key"]): r for r in rows}
    result: dict[tuple[str, str], str] = {}
    conflicts: _Conflicts = {}
    for m in others:
        key = (m.account, m.idempotency_key)
        r = found.get(key)
        if r is None:  # cannot happen: the key conflicted, so a committed row exists
            raise RuntimeError(f"idempotency key of message {m.id} vanished during enqueue")
        if r["payload_hash"] != m.payload_hash:
            conflict = IdempotencyConflict(m.account, m.idempotency_key, r["message_id"])
            if not report:
                raise conflict
            conflicts[key] = conflict
            continue
        result[key] = r["message_id"]
    return result, conflicts
