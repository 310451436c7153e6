"""Event positions consumers can trust, on every backend: a reader never returns an event
while one with a smaller seq may still commit (PostgreSQL reads only below the oldest
running transaction), and reads carry the message's campaign and metadata.
"""

from __future__ import annotations

import json
import time

import asyncpg
import pytest

from queues.postgres.backend import PostgresQueue
from queues.protocol import Event, Queue
from tests.support.polling import until
from tests.support.queues import delivered, message


async def test_events_carry_campaign_and_metadata_and_a_unique_id(queue: Queue) -> None:
    m = message(1, campaign="spring", metadata=json.dumps({"user": 42}))
    await queue.enqueue_many([m])
    lease = await queue.register_worker()
    await queue.claim(lease, 10, time.time())
    await queue.mark_committing(lease, [m.id])
    await queue.record_outcomes(lease, [delivered(m.id)])
    await queue.append_events([Event("ip.paused", time.time(), {"source_ip": "127.0.0.2"})])
    got = await queue.read_events(0, 10)
    assert [e.kind for e in got] == ["message.delivered", "ip.paused"]
    first, second = got
    assert first.campaign == "spring"
    assert first.metadata is not None and json.loads(first.metadata) == {"user": 42}
    assert first.message_id == m.id
    assert second.campaign is None and second.message_id is None
    assert first.id != second.id and first.id == f"ev_{first.seq}"


@pytest.mark.postgres
async def test_postgres_holds_back_events_behind_a_running_transaction(queue: Queue) -> None:
    if not isinstance(queue, PostgresQueue):
        pytest.skip("PostgreSQL only: SQLite's single writer commits in seq order")
    await queue.append_events([Event("before", time.time())])

    async def settled(n: int) -> bool:
        return len(await queue.read_settled_events(0, 10)) >= n

    await until(lambda: settled(1), 120)
    conn = await asyncpg.connect(queue.dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        # A writer that took its seq first and commits last.
        await conn.execute(
            "INSERT INTO md_event (txid, at, kind, data) "
            "SELECT pg_current_xact_id(), 0, 'slow', '{}'::jsonb"
        )
        await queue.append_events([Event("fast", time.time())])
        kinds = [e.kind for e in await queue.read_settled_events(0, 10)]
        # The plain read shows what is committed, "fast" included.
        assert [e.kind for e in await queue.read_events(0, 10)] == ["before", "fast"]
        assert kinds == ["before"], kinds  # "fast" would let a reader skip "slow" for good
        await tx.commit()
    finally:
        await conn.close()
    # Settled once every transaction older than them has ended (other sessions of the
    # cluster count too): wait for that, bounded.
    await until(lambda: settled(3), 120)
    got = await queue.read_settled_events(0, 10)
    assert [e.kind for e in got] == ["before", "slow", "fast"]
