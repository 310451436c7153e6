"""What only the SQLite backend promises (beyond the conformance suite)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from queues import open_queue
from queues.errors import InvalidQueueInput, LeaseLost, QueueUnavailable
from queues.protocol import HeldFilter, HeldReason, MessageState
from queues.sqlite.backend import SqliteQueue
from queues.sqlite.locks import lock_dir
from tests.support.queues import delivered, ids, message, messages


class OpenSqlite(Protocol):
    async def __call__(self, path: Path, **options: Any) -> SqliteQueue: ...


@pytest.fixture
async def open_sqlite() -> AsyncIterator[OpenSqlite]:
    """Opens SqliteQueues (`await open_sqlite(path, **options)`); all closed at teardown
    (close is idempotent: a test may close one early, as a crashed process would)."""
    opened: list[SqliteQueue] = []

    async def open_(path: Path, **options: Any) -> SqliteQueue:
        q = SqliteQueue(path, **options)
        await q.open()
        opened.append(q)
        return q

    yield open_
    for q in opened:
        await q.close()


@pytest.fixture
async def queue(tmp_path: Path, open_sqlite: OpenSqlite) -> SqliteQueue:
    return await open_sqlite(tmp_path / "queue.db")


def inspect(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the file through a separate, plain sqlite3 connection."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_open_queue_builds_the_sqlite_backend(tmp_path: Path) -> None:
    q = open_queue("sqlite", path=tmp_path / "q.db", synchronous="NORMAL", lease_ttl=5.0)
    assert isinstance(q, SqliteQueue)
    assert q.lease_ttl == 5.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"backend": "sqlite"}, "path"),
        ({"backend": "postgres"}, "dsn"),
        ({"backend": "mysql", "path": Path("q.db")}, "backend"),
        ({"backend": "sqlite", "path": Path("q.db"), "synchronous": "OFF"}, "synchronous"),
        ({"backend": "sqlite", "path": Path("q.db"), "lease_ttl": 0}, "lease_ttl"),
    ],
)
def test_open_queue_names_the_bad_field(kwargs: dict[str, object], field: str) -> None:
    backend = kwargs.pop("backend")
    assert isinstance(backend, str)
    with pytest.raises(InvalidQueueInput) as info:
        open_queue(backend, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


async def test_file_is_in_wal_mode_and_schema_is_idempotent(
    tmp_path: Path, open_sqlite: OpenSqlite
) -> None:
    path = tmp_path / "q.db"
    # two openers at once
    queues = await asyncio.gather(open_sqlite(path), open_sqlite(path, synchronous="NORMAL"))
    await queues[0].enqueue_many([message()])
    assert inspect(path, "PRAGMA journal_mode") == [("wal",)]
    assert await queues[1].active_count() == 1
    for q in queues:
        await q.close()
    again = await open_sqlite(path)
    assert await again.active_count() == 1


async def test_use_after_close_is_refused(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "q.db")
    await q.open()
    await q.close()
    await q.close()  # idempotent
    with pytest.raises(RuntimeError):
        await q.active_count()


async def test_expired_messages_are_replaced_within_the_limit(queue: SqliteQueue) -> None:
    now = time.time()
    expired = messages(3, priority=9, expires_at=now - 1)
    fine = messages(2, priority=0)
    await queue.enqueue_many([*expired, *fine])
    lease = await queue.register_worker()
    assert ids(await queue.claim(lease, 2, now)) == ids(fine)
    assert {r.state for r in await queue.get(list(ids(expired)))} == {MessageState.FAILED}


async def test_claim_under_a_stale_lease_raises(tmp_path: Path, open_sqlite: OpenSqlite) -> None:
    path = tmp_path / "q.db"
    worker, rescuer = await open_sqlite(path), await open_sqlite(path)
    await worker.enqueue_many([message()])
    lease = await worker.register_worker()
    await worker.claim(lease, 1, time.time())
    await worker.close()  # releases the lock: dead for recovery
    assert (await rescuer.recover(time.time())).workers == 1
    with pytest.raises(LeaseLost):
        await rescuer.claim(lease, 1, time.time())


async def test_ten_thousand_messages_in_one_call(queue: SqliteQueue) -> None:
    batch = messages(10_000)
    results = await queue.enqueue_many(batch)
    assert [r.id for r in results] == [m.id for m in batch]
    assert all(r.created for r in results)
    again = await queue.enqueue_many(batch)
    assert [r.id for r in again] == [m.id for m in batch]
    assert not any(r.created for r in again)
    assert await queue.active_count() == 10_000


async def test_event_loop_runs_while_sqlite_works(queue: SqliteQueue) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await queue.enqueue_many(messages(5_000))  # holds its thread for a good while
    during = ticks - before
    stop.set()
    await task
    # Had the enqueue run on the loop thread, the ticker could not have run meanwhile.
    assert during > 10


async def test_message_id_already_stored_is_refused_whole(queue: SqliteQueue) -> None:
    first = message()
    await queue.enqueue_many([first])
    fresh = message()
    same_id = message(id=first.id)
    with pytest.raises(InvalidQueueInput) as info:
        await queue.enqueue_many([fresh, same_id])
    assert info.value.field == "id"
    assert first.id in str(info.value)
    assert await queue.get([fresh.id]) == []
    # Nothing of the batch was kept, idempotency keys included.
    (result,) = await queue.enqueue_many([fresh])
    assert result.created


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"idempotency_key": ""}, "idempotency_key"), ({"body": "text"}, "body")],
)
async def test_unstorable_message_is_refused(
    queue: SqliteQueue, fields: dict[str, object], field: str
) -> None:
    good = message()
    with pytest.raises(InvalidQueueInput) as info:
        await queue.enqueue_many([good, message(**fields)])  # type: ignore[arg-type]
    assert info.value.field == field
    assert await queue.active_count() == 0


async def test_missing_lock_file_falls_back_to_the_heartbeat(
    tmp_path: Path, open_sqlite: OpenSqlite
) -> None:
    path = tmp_path / "q.db"
    worker = await open_sqlite(path, lease_ttl=30)
    rescuer = await open_sqlite(path, lease_ttl=30)
    await worker.enqueue_many([message()])
    lease = await worker.register_worker()
    await worker.claim(lease, 1, time.time())
    (lock_dir(path) / f"{lease.worker_id}.lock").unlink()
    now = time.time()
    assert (await rescuer.recover(now)).workers == 0  # heartbeat still fresh
    assert (await rescuer.recover(now + 31)).requeued == 1  # heartbeat too old
    assert await worker.heartbeat(lease) is False


async def test_close_unregisters_idle_workers_only(tmp_path: Path, open_sqlite: OpenSqlite) -> None:
    path = tmp_path / "q.db"
    worker, rescuer = await open_sqlite(path), await open_sqlite(path)
    await worker.enqueue_many([message()])
    idle = await worker.register_worker()
    busy = await worker.register_worker()
    assert len(await worker.claim(busy, 1, time.time())) == 1
    await worker.close()
    assert not (lock_dir(path) / f"{idle.worker_id}.lock").exists()
    assert (lock_dir(path) / f"{busy.worker_id}.lock").exists()
    report = await rescuer.recover(time.time())
    assert (report.workers, report.requeued) == (1, 1)
    assert inspect(path, "SELECT count(*) FROM workers") == [(0,)]


async def test_prune_drops_bodies_with_their_messages(queue: SqliteQueue) -> None:
    batch = messages(1200)  # more than one prune batch
    await queue.enqueue_many(batch)
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, 1100, time.time())
    await queue.record_outcomes(lease, [delivered(m) for m in claimed])
    assert await queue.prune(time.time() + 100, 10, 1000) == (1100, 0)
    assert inspect(queue.path, "SELECT count(*) FROM messages") == [(100,)]
    assert inspect(queue.path, "SELECT count(*) FROM message_bodies") == [(100,)]
    remaining = await queue.claim(lease, 200, time.time())
    assert len(remaining) == 100
    bodies = {m.id: m.body for m in batch}
    assert all(m.body == bodies[m.id] for m in remaining)


async def test_a_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from queues.errors import SchemaMismatch
    from queues.sqlite.backend import SqliteQueue

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE messages (id TEXT)")  # a pre-release layout, unversioned
    conn.commit()
    conn.close()
    q = SqliteQueue(path)
    with pytest.raises(SchemaMismatch) as err:
        await q.open()
    assert str(path) in str(err.value)
    fresh = SqliteQueue(tmp_path / "new.db")
    await fresh.open()
    await fresh.close()
    again = SqliteQueue(tmp_path / "new.db")
    await again.open()  # its own version: accepted
    await again.close()


async def test_a_file_from_before_held_mail_gets_its_columns_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    q = SqliteQueue(path)
    await q.open()
    now = time.time()
    m = message(due_at=now - 1)
    await q.enqueue_many([m])
    lease = await q.register_worker()
    await q.claim(lease, 1, now)
    await q.mark_committing(lease, [m.id])
    await q.close()
    # The file as it was before the held-mail columns (a committing message in it).
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE messages DROP COLUMN reason")
    conn.execute("ALTER TABLE messages DROP COLUMN resends")
    conn.commit()
    conn.close()
    assert "reason" not in {r[1] for r in inspect(path, "PRAGMA table_info(messages)")}

    q = SqliteQueue(path)
    await q.open()
    try:
        columns = {r[1] for r in inspect(path, "PRAGMA table_info(messages)")}
        assert {"reason", "resends"} <= columns
        assert (await q.recover(now + 3600)).ambiguous == 1
        (held,) = await q.held(HeldFilter())
        assert (held.id, held.reason, held.resends) == (m.id, HeldReason.WORKER_LOST, 0)
    finally:
        await q.close()
    # Opening again changes nothing (idempotent).
    q = SqliteQueue(path)
    await q.open()
    await q.close()


async def test_a_locked_file_is_queue_unavailable_and_nothing_is_stored(tmp_path: Path) -> None:
    """Busy past busy_timeout is the store being unavailable (the engine pauses claims on
    it), not a driver error."""
    q = SqliteQueue(tmp_path / "queue.db", busy_timeout=0.05)
    await q.open()
    other = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        m = message()
        with pytest.raises(QueueUnavailable) as err:
            await q.enqueue_many([m])
        assert err.value.code == "busy"
        assert isinstance(err.value, ConnectionError)
        other.execute("ROLLBACK")
        assert await q.get([m.id]) == []
        assert [r.created for r in await q.enqueue_many([m])] == [True]
    finally:
        other.close()
        await q.close()


async def test_a_bad_statement_is_not_queue_unavailable(queue: SqliteQueue) -> None:
    with pytest.raises(sqlite3.OperationalError):
        await queue._db.run(lambda conn: conn.execute("SELECT * FROM no_such_table"))
