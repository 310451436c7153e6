"""`[queue]`: which store holds the mail, and how durably."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher.config.context import DEFAULT_STATE_DIR, ParseContext
from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table
from queues.protocol import DEFAULT_LEASE_TTL


class Backend(enum.StrEnum):
    SQLITE = "sqlite"  # embedded: every process of one node on one file
    POSTGRES = "postgres"  # many nodes on one server


class Synchronous(enum.StrEnum):
    """SQLite PRAGMA synchronous: FULL survives power loss; NORMAL survives a process crash."""

    FULL = "FULL"
    NORMAL = "NORMAL"


QUEUE_FILE = "queue.db"


@dataclass(frozen=True, slots=True)
class QueueConfig:
    backend: Backend = Backend.SQLITE
    path: Path = DEFAULT_STATE_DIR / QUEUE_FILE  # default: inside state_dir
    dsn: str = field(default="", repr=False)  # may hold a password: never logged
    idempotency_retention: float = 7 * 86400.0
    retention: float = 30 * 86400.0
    synchronous: Synchronous = Synchronous.FULL
    # A worker whose heartbeat stops this long loses its messages to recovery (PostgreSQL;
    # on SQLite the kernel's lock on a dead process decides first).
    lease_ttl: float = DEFAULT_LEASE_TTL


SECTION = Section(
    "queue",
    ("backend", "path", "dsn", "idempotency_retention", "retention", "synchronous", "lease_ttl"),
)


def parse_queue(t: Table, ctx: ParseContext) -> QueueConfig:
    base = QueueConfig()
    queue = QueueConfig(
        backend=t.choice("backend", base.backend),
        path=ctx.resolve(t.text("path", ctx.state_file(QUEUE_FILE))),
        dsn=t.text("dsn", base.dsn),
        idempotency_retention=t.duration("idempotency_retention", base.idempotency_retention),
        retention=t.duration("retention", base.retention),
        synchronous=t.choice("synchronous", base.synchronous),
        lease_ttl=t.duration("lease_ttl", base.lease_ttl),
    )
    if queue.lease_ttl < 1.0:
        raise ConfigError(field="queue.lease_ttl", reason="must be at least 1s")
    if queue.backend == Backend.POSTGRES and not queue.dsn:
        raise ConfigError(field="queue.dsn", reason="is required when queue.backend is postgres")
    t.done()
    return queue
