"""Fenced worker leases and recovery on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from queues.errors import LeaseLost
from queues.postgres import PostgresQueue
from queues.protocol import MessageState, OutcomeRecord
from tests.support.postgres import OpenPostgres, create_test_database, make_message

pytestmark = pytest.mark.postgres

TTL = 30.0
# A recovery pass run "later" than every short lease (TTL) but before the long ones expire.
LATER = 2 * TTL


@pytest.fixture
async def dsn() -> str:
    return await create_test_database()


@pytest.fixture
async def old(dsn: str) -> AsyncIterator[PostgresQueue]:
    """The worker whose lease will expire."""
    q = PostgresQueue(dsn, lease_ttl=TTL)
    await q.open()
    yield q
    await q.close()


@pytest.fixture
async def new(dsn: str) -> AsyncIterator[PostgresQueue]:
    """The worker that takes over; its lease outlives every recovery pass of a test."""
    q = PostgresQueue(dsn, lease_ttl=100 * TTL)
    await q.open()
    yield q
    await q.close()


async def test_epochs_grow(old: PostgresQueue, new: PostgresQueue) -> None:
    a = await old.register_worker()
    b = await new.register_worker()
    c = await old.register_worker()
    assert a.epoch < b.epoch < c.epoch
    assert len({a.worker_id, b.worker_id, c.worker_id}) == 3


async def test_expired_worker_cannot_mark_after_another_recovered(
    old: PostgresQueue, new: PostgresQueue
) -> None:
    await old.enqueue_many([make_message(i) for i in range(4)])
    stale = await old.register_worker()
    claimed = [m.id for m in await old.claim(stale, 10, time.time())]
    assert await old.mark_committing(stale, claimed[:1]) == set(claimed[:1])

    report = await new.recover(time.time() + LATER)
    assert (report.workers, report.requeued, report.ambiguous) == (1, 3, 1)
    fresh = await new.register_worker()
    taken = [m.id for m in await new.claim(fresh, 10, time.time())]

    assert sorted(taken) == sorted(claimed[1:])
    assert await old.mark_committing(stale, claimed) == set()
    delivered = [OutcomeRecord(i, MessageState.DELIVERED) for i in claimed]
    assert await old.record_outcomes(stale, delivered) == 0
    assert await old.heartbeat(stale) is False
    with pytest.raises(LeaseLost):
        await old.claim(stale, 10, time.time())
    # The new holder is untouched by the old one's attempts.
    assert await new.mark_committing(fresh, taken) == set(taken)
    assert await new.record_outcomes(fresh, delivered) == len(taken)
    states = {r.id: r.state for r in await new.get(claimed)}
    assert states[claimed[0]] == MessageState.AMBIGUOUS
    assert {states[i] for i in taken} == {MessageState.DELIVERED}


async def test_recovery_follows_the_stream_policy(old: PostgresQueue, new: PostgresQueue) -> None:
    held = make_message(1, stream="transactional")
    retried = make_message(2, stream="broadcast")
    unsent = make_message(3, stream="transactional")
    await old.enqueue_many([held, retried, unsent])
    lease = await old.register_worker()
    await old.claim(lease, 10, time.time())
    await old.mark_committing(lease, [held.id, retried.id])

    report = await new.recover(time.time() + LATER, {"broadcast": "retry", "transactional": "hold"})

    assert (report.workers, report.requeued, report.ambiguous) == (1, 2, 1)
    records = {r.id: r for r in await new.get([held.id, retried.id, unsent.id])}
    assert (records[held.id].state, records[held.id].attempts) == (MessageState.AMBIGUOUS, 1)
    # A mark may have reached the dot: the retried one counts the attempt, the unsent not.
    assert (records[retried.id].state, records[retried.id].attempts) == (MessageState.QUEUED, 1)
    assert (records[unsent.id].state, records[unsent.id].attempts) == (MessageState.QUEUED, 0)


async def test_live_leases_are_left_alone(old: PostgresQueue, new: PostgresQueue) -> None:
    await old.enqueue_many([make_message(1)])
    lease = await old.register_worker()
    (claimed,) = await old.claim(lease, 1, time.time())

    assert await old.heartbeat(lease) is True
    report = await new.recover(time.time())

    assert report.workers == 0
    assert await old.mark_committing(lease, [claimed.id]) == {claimed.id}
    assert await old.heartbeat(lease) is True


async def test_an_expired_lease_is_dead_even_before_recovery(
    dsn: str, open_pg: OpenPostgres
) -> None:
    # A TTL shorter than one round trip: expired by the time the next call runs.
    q = await open_pg(dsn, lease_ttl=1e-6)
    await q.enqueue_many([make_message(1)])
    lease = await q.register_worker()
    with pytest.raises(LeaseLost):
        await q.claim(lease, 1, time.time())
    assert await q.heartbeat(lease) is False
    assert await q.active_count() == 1


async def test_concurrent_recoveries_take_each_lease_once(
    dsn: str, old: PostgresQueue, open_pg: OpenPostgres
) -> None:
    await old.enqueue_many([make_message(i) for i in range(200)])
    for _ in range(4):
        lease = await old.register_worker()
        await old.claim(lease, 50, time.time())
    recoverers = [await open_pg(dsn, lease_ttl=100 * TTL) for _ in range(3)]
    reports = await asyncio.gather(
        *(q.recover(time.time() + LATER) for q in recoverers for _ in range(2))
    )

    assert sum(r.workers for r in reports) == 4
    assert sum(r.requeued for r in reports) == 200
    assert (await old.counts()).by_state == {"queued": 200}


async def test_close_hands_back_leases(dsn: str, new: PostgresQueue) -> None:
    closing = PostgresQueue(dsn, lease_ttl=100 * TTL)
    await closing.open()
    await closing.enqueue_many([make_message(1)])
    idle = await closing.register_worker()
    busy = await closing.register_worker()
    await closing.claim(busy, 1, time.time())
    await closing.close()

    # Not waiting for the long TTL: the busy lease was expired at close, the idle one dropped.
    report = await new.recover(time.time())

    assert (report.workers, report.requeued) == (1, 1)
    assert await new.heartbeat(idle) is False


async def test_release_unheld_requeues_what_a_lost_claim_reply_left(old: PostgresQueue) -> None:
    await old.enqueue_many([make_message(i) for i in range(6)])
    lease = await old.register_worker()
    claimed = [m.id for m in await old.claim(lease, 6, time.time())]
    held, lost = claimed[:2], claimed[2:]
    await old.mark_committing(lease, [lost[0]])  # may have reached the dot: stays

    assert await old.release_unheld(lease, held) == len(lost) - 1

    states = {r.id: r.state for r in await old.get(claimed)}
    assert {states[i] for i in held} == {MessageState.SENDING}
    assert states[lost[0]] == MessageState.COMMITTING
    assert {states[i] for i in lost[1:]} == {MessageState.QUEUED}
    assert {r.attempts for r in await old.get(lost[1:])} == {0}
