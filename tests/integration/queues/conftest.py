"""Fixtures of the queue conformance suite: one store per test, on every backend.

`queue` is an opened queue; `make_queue(**options)` opens more queue objects on the same
store (a second worker process, a recovering node). The postgres parameter is skipped,
with the reason, while its server is down, and fails instead when `CI` is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from queues.postgres.backend import PostgresQueue
from queues.protocol import Queue
from queues.sqlite.backend import SqliteQueue
from tests.support.postgres import (
    ConnectPostgres,
    OpenPostgres,
    create_test_database,
    unreachable,
)
from tests.support.queues import QueueBuilder

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class QueueFactory:
    """Builds and opens queue objects on one store; closes the survivors at teardown."""

    def __init__(self, build: QueueBuilder) -> None:
        self._build = build
        self._open: list[Queue] = []

    async def __call__(self, **options: Any) -> Queue:
        queue = self._build(**options)
        await queue.open()
        self._open.append(queue)
        return queue

    async def crash(self, queue: Queue) -> None:
        """Close `queue` (connections and locks go; its leases are left to recovery)."""
        self._open.remove(queue)
        await queue.close()

    async def close_all(self) -> None:
        while self._open:
            await self._open.pop().close()


async def _postgres_builder() -> QueueBuilder:
    try:
        dsn: str = await create_test_database()
    except OSError as exc:  # includes ConnectionRefusedError and socket timeouts
        unreachable(exc)

    def build(**options: Any) -> Queue:
        queue: Queue = PostgresQueue(dsn, **options)
        return queue

    return build


@pytest.fixture(params=BACKENDS)
async def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    """A factory of opened queues sharing one fresh store of the parametrized backend."""
    if request.param == "sqlite":
        path = tmp_path / "queue.db"

        def build(**options: Any) -> Queue:
            return SqliteQueue(path, **options)

        factory = QueueFactory(build)
    else:
        factory = QueueFactory(await _postgres_builder())
    try:
        yield factory
    finally:
        await factory.close_all()


@pytest.fixture
async def queue(make_queue: QueueFactory) -> Queue:
    """One opened queue on a fresh store."""
    return await make_queue()


@pytest.fixture
async def open_pg() -> AsyncIterator[OpenPostgres]:
    """More PostgresQueues on a test's database (`await open_pg(dsn, **options)`): another
    worker or pool; all closed at teardown."""
    opened: list[PostgresQueue] = []

    async def open_(dsn: str, **options: Any) -> PostgresQueue:
        q = PostgresQueue(dsn, **options)
        await q.open()
        opened.append(q)
        return q

    yield open_
    for q in opened:
        await q.close()


@pytest.fixture
async def pg_connect() -> AsyncIterator[ConnectPostgres]:
    """Plain asyncpg connections (an administrator, a blocking transaction); closed at
    teardown."""
    conns: list[asyncpg.Connection] = []

    async def connect(dsn: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn)
        conns.append(conn)
        return conn

    yield connect
    for conn in conns:
        await conn.close()
