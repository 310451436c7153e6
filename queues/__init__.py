"""Where mail waits: the `Queue` protocol, its shared types, and `open_queue`.

Backends are imported lazily by `open_queue`, so that using one never imports the other's
driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from queues.errors import (
    IdempotencyConflict,
    InvalidInput,
    InvalidQueueInput,
    LeaseLost,
    MaildispatchError,
    QueueClosed,
    QueueError,
    QueueTimeout,
    QueueUnavailable,
    SchemaMismatch,
)
from queues.protocol import (
    OUTCOME_STATES,
    TERMINAL_STATES,
    AttemptRecord,
    ClaimedMessage,
    EnqueueResult,
    Lease,
    MessageRecord,
    MessageState,
    MessageView,
    NewMessage,
    OutcomeRecord,
    Queue,
    RecoveryReport,
    StatusCounts,
)

__all__ = [
    "BACKENDS",
    "OUTCOME_STATES",
    "TERMINAL_STATES",
    "AttemptRecord",
    "ClaimedMessage",
    "EnqueueResult",
    "IdempotencyConflict",
    "InvalidInput",
    "InvalidQueueInput",
    "Lease",
    "LeaseLost",
    "MaildispatchError",
    "MessageRecord",
    "MessageState",
    "MessageView",
    "NewMessage",
    "OutcomeRecord",
    "Queue",
    "QueueClosed",
    "QueueError",
    "QueueTimeout",
    "QueueUnavailable",
    "RecoveryReport",
    "SchemaMismatch",
    "StatusCounts",
    "open_queue",
]

BACKENDS = ("sqlite", "postgres")


def open_queue(
    backend: str, *, path: Path | None = None, dsn: str | None = None, **options: Any
) -> Queue:
    """Build the queue backend named `backend` ("sqlite" needs `path`, "postgres" `dsn`).

    `options` go to the backend's constructor (e.g. synchronous, lease_ttl). The queue is
    not opened yet: `await queue.open()` before use, `await queue.close()` after.
    """
    if backend == "sqlite":
        if path is None:
            raise InvalidQueueInput(
                field="path", reason="the sqlite backend needs a database file path"
            )
        from queues.sqlite.backend import SqliteQueue

        return SqliteQueue(Path(path), **options)
    if backend == "postgres":
        if not dsn:
            raise InvalidQueueInput(field="dsn", reason="the postgres backend needs a DSN")
        from queues.postgres.backend import PostgresQueue  # type: ignore[import-not-found,unused-ignore]

        queue: Queue = PostgresQueue(dsn, **options)
        return queue
    raise InvalidQueueInput(
        field="backend", reason=f"expected one of {list(BACKENDS)}, got {backend!r}"
    )
