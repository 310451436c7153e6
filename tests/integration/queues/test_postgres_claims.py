"""Claims, outcomes and wake-ups on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from queues.postgres import PostgresQueue
from queues.protocol import MessageState, OutcomeRecord
from tests.support.postgres import ConnectPostgres, OpenPostgres, create_test_database, make_message

pytestmark = pytest.mark.postgres


@pytest.fixture
async def dsn() -> str:
    return await create_test_database()


@pytest.fixture
async def queue(dsn: str) -> AsyncIterator[PostgresQueue]:
    q = PostgresQueue(dsn)
    await q.open()
    yield q
    await q.close()


async def test_claims_due_messages_by_priority_then_due_time(queue: PostgresQueue) -> None:
    now = time.time()
    low_early = make_message(1, priority=0, due_at=now - 30)
    high_late = make_message(2, priority=5, due_at=now - 10)
    high_early = make_message(3, priority=5, due_at=now - 20)
    not_due = make_message(4, priority=9, due_at=now + 3600)
    await queue.enqueue_many([low_early, high_late, high_early, not_due])
    lease = await queue.register_worker()

    claimed = await queue.claim(lease, 10, now)

    assert [m.id for m in claimed] == [high_early.id, high_late.id, low_early.id]
    assert all(m.lease == lease for m in claimed)
    assert {r.state for r in await queue.get([m.id for m in claimed])} == {MessageState.SENDING}
    assert await queue.next_due() == pytest.approx(not_due.due_at)
    assert await queue.claim(lease, 10, now) == []
    assert [m.id for m in await queue.claim(lease, 10, not_due.due_at)] == [not_due.id]


async def test_claim_returns_the_stored_message(queue: PostgresQueue) -> None:
    msg = make_message(1, campaign="spring", pool="warm", smtputf8=True, expires_at=2e9)
    await queue.enqueue_many([msg])
    lease = await queue.register_worker()

    (got,) = await queue.claim(lease, 1, time.time())

    assert (got.id, got.body, got.rcpt, got.verp_token, got.message_id) == (
        msg.id,
        msg.body,
        msg.rcpt,
        msg.verp_token,
        msg.message_id,
    )
    assert (got.campaign, got.pool, got.smtputf8, got.expires_at) == ("spring", "warm", True, 2e9)
    assert got.attempts == 0


async def test_expired_messages_fail_instead_of_being_claimed(queue: PostgresQueue) -> None:
    now = time.time()
    stale = make_message(1, expires_at=now - 1)
    fresh = make_message(2, expires_at=now + 3600)
    await queue.enqueue_many([stale, fresh])
    lease = await queue.register_worker()

    claimed = await queue.claim(lease, 10, now)

    assert [m.id for m in claimed] == [fresh.id]
    (record,) = await queue.get([stale.id])
    assert record.state == MessageState.FAILED
    assert await queue.active_count() == 1


async def test_two_workers_never_claim_the_same_message(
    dsn: str, queue: PostgresQueue, open_pg: OpenPostgres
) -> None:
    total = 3000
    await queue.enqueue_many([make_message(i) for i in range(total)])
    other = await open_pg(dsn)

    async def drain(q: PostgresQueue) -> list[str]:
        lease = await q.register_worker()
        got: list[str] = []
        while batch := await q.claim(lease, 37, time.time()):
            got.extend(m.id for m in batch)
        return got

    results = await asyncio.gather(drain(queue), drain(queue), drain(other), drain(other))

    everything = [i for r in results for i in r]
    assert len(everything) == len(set(everything)) == total
    assert sum(1 for r in results if r) >= 2  # they really did compete


async def test_outcomes_finish_defer_and_requeue(queue: PostgresQueue) -> None:
    now = time.time()
    a, b, c = make_message(1, pool="p1"), make_message(2, pool="p1"), make_message(3)
    await queue.enqueue_many([a, b, c])
    lease = await queue.register_worker()
    await queue.claim(lease, 10, now)
    assert await queue.mark_committing(lease, [a.id, b.id]) == {a.id, b.id}

    applied = await queue.record_outcomes(
        lease,
        [
            OutcomeRecord(a.id, MessageState.DELIVERED, reply_code=250, source_ip="127.0.0.2"),
            OutcomeRecord(b.id, MessageState.DEFERRED, retry_at=now + 600, reply_code=451),
            OutcomeRecord(c.id, MessageState.QUEUED, counts_attempt=False, retry_at=now),
        ],
    )

    assert applied == 3
    ra, rb, rc = await queue.get([a.id, b.id, c.id])
    assert (ra.state, ra.attempts, ra.last_reply_code, ra.source_ip) == (
        MessageState.DELIVERED,
        1,
        250,
        "127.0.0.2",
    )
    assert (rb.state, rb.attempts, rb.last_reply_code) == (MessageState.DEFERRED, 1, 451)
    assert (rc.state, rc.attempts) == (MessageState.QUEUED, 0)
    # The deferred one waits for its retry time; the requeued one is due at once.
    assert [m.id for m in await queue.claim(lease, 10, now + 1)] == [c.id]
    assert [m.id for m in await queue.claim(lease, 10, now + 601)] == [b.id]
    counts = await queue.counts()
    assert counts.by_state == {"delivered": 1, "sending": 2}
    assert counts.by_pool == {"p1": {"delivered": 1, "sending": 1}}
    assert counts.by_source_ip == {"127.0.0.2": {"delivered": 1}}
    # An outcome applied twice (a repeat after a lost reply) is applied once.
    assert await queue.record_outcomes(lease, [OutcomeRecord(a.id, MessageState.BOUNCED)]) == 0


async def test_outcome_input_is_checked(queue: PostgresQueue) -> None:
    from queues.errors import InvalidQueueInput

    lease = await queue.register_worker()
    with pytest.raises(InvalidQueueInput) as err:
        await queue.record_outcomes(lease, [OutcomeRecord("x", MessageState.DEFERRED)])
    assert err.value.field == "outcomes[0].retry_at"
    with pytest.raises(InvalidQueueInput) as err:
        await queue.record_outcomes(lease, [OutcomeRecord("x", MessageState.SENDING)])
    assert err.value.field == "outcomes[0].state"


async def test_cancel_and_prune(queue: PostgresQueue) -> None:
    now = time.time()
    msgs = [make_message(i, campaign="c1" if i < 3 else "c2") for i in range(5)]
    await queue.enqueue_many(msgs)
    lease = await queue.register_worker()
    (sending,) = await queue.claim(lease, 1, now)

    cancelled = await queue.cancel("acme", "c1")

    assert cancelled == (2 if sending.campaign == "c1" else 3)
    assert (await queue.get([sending.id]))[0].state == MessageState.SENDING
    assert await queue.cancel("acme") == 5 - 1 - cancelled
    assert await queue.active_count() == 1

    # Nothing is old enough yet; then everything finished is, and keys have their own clock.
    assert await queue.prune(now, 3600, 3600) == (0, 0)
    assert await queue.prune(now + 7200, 3600, 10**6) == (4, 0)
    assert len(await queue.get([m.id for m in msgs])) == 1
    again = await queue.enqueue_many([msgs[1]])
    assert again[0].id == msgs[1].id and not again[0].created  # pruning kept the key
    assert await queue.prune(now + 7200, 3600, 0) == (0, 5)


async def test_wait_for_work_wakes_on_enqueue(
    dsn: str, queue: PostgresQueue, open_pg: OpenPostgres
) -> None:
    await queue.wait_for_work(0)  # starts the listener; the first wait returns at once
    await asyncio.wait_for(queue.listener.connected.wait(), 30)
    await queue.wait_for_work(0)  # consume the wake-up of the connect
    producer = await open_pg(dsn)
    waiting = asyncio.create_task(queue.wait_for_work(3600))
    await asyncio.sleep(0)
    assert not waiting.done()
    await producer.enqueue_many([make_message(1)])
    await asyncio.wait_for(waiting, 30)  # woken by NOTIFY, far before its timeout


async def test_listener_reconnects_after_losing_its_connection(
    dsn: str, queue: PostgresQueue, pg_connect: ConnectPostgres
) -> None:
    await queue.wait_for_work(0)
    await asyncio.wait_for(queue.listener.connected.wait(), 30)
    await queue.wait_for_work(0)
    connects = queue.listener.connects
    admin = await pg_connect(dsn)
    killed = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'maildispatch-listener'"
    )
    assert killed == 1
    # The reconnect itself wakes the worker (announcements in between are lost).
    await asyncio.wait_for(queue.wait_for_work(3600), 30)
    assert queue.listener.connects == connects + 1
    waiting = asyncio.create_task(queue.wait_for_work(3600))
    await asyncio.sleep(0)
    await queue.enqueue_many([make_message(1)])
    await asyncio.wait_for(waiting, 30)
