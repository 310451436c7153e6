"""Batched enqueue with idempotency keys (runs on the connection thread, in a transaction)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from queues.errors import IdempotencyConflict, InvalidQueueInput
from queues.protocol import EnqueueResult, NewMessage
from queues.sqlite.sql import Q, R
from queues.sqlite.suppressions import hold_new, settle

_Key = tuple[str, str]


def _check(message: NewMessage) -> None:
    # Only what SQLite would otherwise store silently wrong; the dispatcher validates content.
    if not message.id:
        raise InvalidQueueInput(field="id", reason="must not be empty")
    if not message.account:
        raise InvalidQueueInput(field="account", reason=f"must not be empty (message {message.id})")
    if not message.idempotency_key:
        raise InvalidQueueInput(
            field="idempotency_key", reason=f"must not be empty (message {message.id})"
        )
    if not isinstance(message.body, bytes):
        raise InvalidQueueInput(field="body", reason=f"must be bytes (message {message.id})")


def enqueue_batch(
    conn: sqlite3.Connection, messages: Sequence[NewMessage], now: float, report: bool = False
) -> list[EnqueueResult | IdempotencyConflict]:
    """Store the new messages of one batch; call inside a write transaction.

    An idempotency conflict (with a stored key or an earlier message of the same batch)
    raises, so the caller rolls back the whole batch; with `report`, it becomes that
    message's result instead and the others are stored.
    """
    first: dict[_Key, NewMessage] = {}
    conflicts: dict[int, IdempotencyConflict] = {}
    for i, message in enumerate(messages):
        _check(message)
        key = (message.account, message.idempotency_key)
        earlier = first.setdefault(key, message)
        if earlier.payload_hash != message.payload_hash:
            conflict = IdempotencyConflict(message.account, message.idempotency_key, earlier.id)
            if not report:
                raise conflict
            conflicts[i] = conflict

    stored: dict[_Key, str] = {}
    refused: dict[_Key, IdempotencyConflict] = {}
    for account, idem_key, payload_hash, message_id in conn.execute(
        Q.find_keys, (json.dumps(list(first)),)
    ):
        if first[(account, idem_key)].payload_hash != payload_hash:
            conflict = IdempotencyConflict(account, idem_key, message_id)
            if not report:
                raise conflict
            refused[(account, idem_key)] = conflict
            continue
        stored[(account, idem_key)] = message_id

    fresh = [m for key, m in first.items() if key not in stored and key not in refused]
    conn.executemany(
        Q.insert_key,
        [(m.account, m.idempotency_key, m.payload_hash, m.id, now) for m in fresh],
    )
    # Sequence numbers are ours to pick: the write lock is held until commit.
    (last,) = conn.execute(Q.last_seq).fetchone()
    # A savepoint so that, on a constraint error, the stored state can be inspected as it was.
    conn.execute("SAVEPOINT insert_messages")
    try:
        conn.executemany(
            Q.insert_message,
            [
                (
                    seq,
                    m.id,
                    m.account,
                    m.idempotency_key,
                    m.payload_hash,
                    m.author_domain,
                    m.rcpt,
                    m.rcpt_domain,
                    m.verp_token,
                    m.message_id,
                    m.stream,
                    m.priority,
                    m.campaign,
                    m.pool,
                    m.due_at,
                    now,
                    m.expires_at,
                    m.smtputf8,
                )
                for seq, m in enumerate(fresh, start=last + 1)
            ],
        )
    except sqlite3.IntegrityError as exc:
        conn.execute("ROLLBACK TO insert_messages")
        raise _constraint_error(conn, fresh, exc) from None
    conn.execute("RELEASE insert_messages")
    conn.executemany(Q.insert_body, [(seq, m.body) for seq, m in enumerate(fresh, start=last + 1)])
    conn.executemany(
        R.insert_metadata,
        [
            (seq, m.metadata)
            for seq, m in enumerate(fresh, start=last + 1)
            if m.metadata is not None
        ],
    )

    # Mail to a suppressed address is stored `suppressed` (terminal, reported), never sent.
    settle(conn, [m.id for m in fresh], now)
    # A paused account's enqueues are accepted and held until it is resumed.
    hold_new(conn, [m.id for m in fresh])

    results: list[EnqueueResult | IdempotencyConflict] = []
    for i, message in enumerate(messages):
        key = (message.account, message.idempotency_key)
        existing = stored.get(key)
        refusal = conflicts.get(i) or refused.get(key)
        if refusal is not None:
            results.append(refusal)
        elif existing is not None:
            results.append(EnqueueResult(existing, created=False))
        else:
            owner = first[key]
            results.append(EnqueueResult(owner.id, created=owner is message))
    return results


def _constraint_error(
    conn: sqlite3.Connection, fresh: list[NewMessage], exc: sqlite3.IntegrityError
) -> InvalidQueueInput:
    """Name the field that made the insert fail (only on this error path)."""
    text = str(exc)
    if "NOT NULL" in text:
        return InvalidQueueInput(field=text.rsplit(".", 1)[-1], reason="must not be None")
    seen: set[str] = set()
    for message in fresh:
        if message.id in seen:
            return InvalidQueueInput(
                field="id", reason=f"message id {message.id!r} appears twice in the batch"
            )
        seen.add(message.id)
    ids = json.dumps([m.id for m in fresh])
    taken = [row[0] for row in conn.execute(Q.existing_ids, (ids,))]
    if taken:
        return InvalidQueueInput(field="id", reason=f"message ids already stored: {taken[:5]!r}")
    return InvalidQueueInput(field="id", reason=text)
