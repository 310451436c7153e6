"""Enqueue on a real PostgreSQL: batches, idempotency keys (also under concurrency)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from queues.errors import IdempotencyConflict, InvalidQueueInput
from queues.postgres import PostgresQueue
from queues.protocol import EnqueueResult
from tests.support.postgres import ConnectPostgres, OpenPostgres, create_test_database, make_message

pytestmark = pytest.mark.postgres
N = 2000  # keys per racing batch: large enough that the two statements overlap


@pytest.fixture
async def dsn() -> str:
    return await create_test_database()


@pytest.fixture
async def queue(dsn: str) -> AsyncIterator[PostgresQueue]:
    q = PostgresQueue(dsn)
    await q.open()
    yield q
    await q.close()


async def test_same_key_and_payload_returns_the_original_id(queue: PostgresQueue) -> None:
    first = await queue.enqueue_many([make_message(1)])
    again = await queue.enqueue_many([make_message(1), make_message(2)])

    assert first[0].created
    assert again[0].id == first[0].id and not again[0].created
    assert again[1].created
    assert await queue.active_count() == 2


async def test_other_payload_is_a_conflict_and_nothing_of_the_batch_is_stored(
    queue: PostgresQueue,
) -> None:
    original = (await queue.enqueue_many([make_message(1)]))[0]
    fresh = make_message(2)

    with pytest.raises(IdempotencyConflict) as err:
        await queue.enqueue_many([fresh, make_message(1, payload_hash="other")])

    assert err.value.existing_id == original.id
    assert await queue.get([fresh.id]) == []
    assert await queue.active_count() == 1


async def test_repeats_within_one_batch(queue: PostgresQueue) -> None:
    a, b = make_message(1), make_message(1)  # same key and payload, other message id

    results = await queue.enqueue_many([a, b])

    assert results[0].created and not results[1].created
    assert results[1].id == results[0].id == a.id
    with pytest.raises(IdempotencyConflict):
        await queue.enqueue_many([make_message(5), make_message(5, payload_hash="x")])
    assert await queue.active_count() == 1


async def test_bad_input_names_the_field_and_stores_nothing(queue: PostgresQueue) -> None:
    with pytest.raises(InvalidQueueInput) as err:
        await queue.enqueue_many([make_message(1), make_message(2, rcpt="a\x00b@x.example")])
    assert err.value.field == "messages[1].rcpt"

    with pytest.raises(InvalidQueueInput) as err:
        await queue.enqueue_many([make_message(3, priority=2**40)])
    assert err.value.field == "messages[0].priority"

    with pytest.raises(InvalidQueueInput) as err:
        await queue.enqueue_many([make_message(4, due_at=float("nan"))])
    assert err.value.field == "messages[0].due_at"

    assert await queue.active_count() == 0


async def test_a_reused_message_id_stores_nothing(queue: PostgresQueue) -> None:
    stored = make_message(1)
    await queue.enqueue_many([stored])

    with pytest.raises(InvalidQueueInput) as err:
        await queue.enqueue_many([make_message(2), make_message(3, id=stored.id)])

    assert err.value.field == "messages.id"
    assert await queue.active_count() == 1


async def test_a_large_batch_takes_a_few_round_trips(queue: PostgresQueue) -> None:
    messages = [make_message(i) for i in range(25_000)]
    before = queue.round_trips

    results = await queue.enqueue_many(messages)

    assert all(r.created for r in results)
    assert await queue.active_count() == len(messages)
    # Per chunk of up to 20,000: three COPYs (keys, rows, contents; 2 each). Besides: BEGIN,
    # NOTIFY (with the suppression and pause checks), COMMIT, a statistics check and maybe
    # an ANALYZE; active_count() is one more.
    chunks = -(-len(messages) // 20_000)
    assert queue.round_trips - before - 1 <= 5 + 6 * chunks


@pytest.mark.parametrize("size", [10, 1500])  # below and above the optimistic COPY path
async def test_a_batch_with_an_existing_key(queue: PostgresQueue, size: int) -> None:
    old = (await queue.enqueue_many([make_message(7)]))[0]
    batch = [make_message(i) for i in range(size)]

    results = await queue.enqueue_many(batch)

    assert results[7] == EnqueueResult(old.id, created=False)
    assert [r.created for r in results].count(False) == 1
    assert await queue.active_count() == size

    bad = [make_message(i + size) for i in range(size)] + [make_message(3, payload_hash="new")]
    with pytest.raises(IdempotencyConflict):
        await queue.enqueue_many(bad)
    assert await queue.active_count() == size
    assert await queue.get([bad[0].id]) == []


async def test_two_connections_one_key_store_one_message(
    dsn: str, queue: PostgresQueue, pg_connect: ConnectPostgres
) -> None:
    """A key being inserted by another transaction: enqueue waits for it, then reuses it."""
    other = make_message(1)
    mine = make_message(1, id="mine-1")  # same key and payload, another id
    blocker = await pg_connect(dsn)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute(
        "INSERT INTO md_idempotency VALUES ($1, $2, $3, $4, 0)",
        other.account,
        other.idempotency_key,
        other.payload_hash,
        other.id,
    )
    pending = asyncio.create_task(queue.enqueue_many([mine]))
    # Wait until the enqueue is blocked on the uncommitted key, as the server reports.
    while not await blocker.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = 'maildispatch' AND wait_event_type = 'Lock'"
    ):
        assert not pending.done(), pending
        await asyncio.sleep(0.01)
    await blocker.execute(
        "INSERT INTO md_content (id, account, idempotency_key, author_domain, rcpt,"
        " rcpt_domain, verp_token, message_id, smtputf8, enqueued_at, body)"
        " VALUES ($1, $2, $3, 'a.example', 'r@b.example', 'b.example', 't', '<m@a>',"
        " false, 0, '')",
        other.id,
        other.account,
        other.idempotency_key,
    )
    await blocker.execute(
        "INSERT INTO md_message (id, state, priority, due_at, account, stream,"
        " enqueued_at, updated_at) VALUES ($1, 'queued', 0, 0, $2, 'transactional', 0, 0)",
        other.id,
        other.account,
    )
    await tx.commit()

    result = (await pending)[0]

    assert result.id == other.id and not result.created
    assert await queue.get([mine.id]) == []
    assert await queue.active_count() == 1


async def test_racing_enqueues_of_the_same_keys_from_two_pools(
    dsn: str, queue: PostgresQueue, open_pg: OpenPostgres
) -> None:
    second = await open_pg(dsn)
    for round_ in range(5):
        batch_a = [make_message(10_000 * round_ + i) for i in range(N)]
        batch_b = [make_message(10_000 * round_ + i) for i in reversed(range(N))]
        ra, rb = await asyncio.gather(queue.enqueue_many(batch_a), second.enqueue_many(batch_b))
        ids_a = [r.id for r in ra]
        ids_b = [r.id for r in reversed(rb)]
        assert ids_a == ids_b
        created = [int(x.created) + int(y.created) for x, y in zip(ra, reversed(rb), strict=True)]
        assert created == [1] * N
    assert await queue.active_count() == 5 * N
