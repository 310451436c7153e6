"""What the store tells an account about its messages, and per-item enqueue results,
held against every backend."""

from __future__ import annotations

import json
import time

from queues.errors import IdempotencyConflict
from queues.protocol import MessageState, OutcomeRecord, Queue
from tests.support.queues import delivered, message


def mid(n: int) -> str:
    # Ids sort by time in production; here by their number.
    return f"{n:032x}"


async def test_enqueue_each_stores_the_valid_and_reports_conflicts(queue: Queue) -> None:
    stored = message(id=mid(1), idempotency_key="k1")
    replayed = message(id=mid(7), idempotency_key="k7")
    await queue.enqueue_many([stored, replayed])
    batch = [
        message(id=mid(2), idempotency_key="k1"),  # same key, other payload: conflict
        message(id=mid(3), idempotency_key="k3"),
        message(id=mid(4), idempotency_key="k3"),  # other payload than mid(3): conflict
        message(id=mid(5), idempotency_key="k7", payload_hash=replayed.payload_hash),  # replay
        message(id=mid(6), idempotency_key="k6"),
    ]
    results = await queue.enqueue_each(batch)
    assert isinstance(results[0], IdempotencyConflict) and results[0].existing_id == mid(1)
    assert not isinstance(results[1], IdempotencyConflict)
    assert (results[1].id, results[1].created) == (mid(3), True)
    assert isinstance(results[2], IdempotencyConflict) and results[2].existing_id == mid(3)
    assert not isinstance(results[3], IdempotencyConflict)
    assert (results[3].id, results[3].created) == (mid(7), False)
    assert not isinstance(results[4], IdempotencyConflict)
    assert (results[4].id, results[4].created) == (mid(6), True)
    assert sorted(r.id for r in await queue.get([mid(n) for n in range(1, 8)])) == [
        mid(1),
        mid(3),
        mid(6),
        mid(7),
    ]
    assert await queue.enqueue_each([]) == []


async def test_large_enqueue_each_with_a_conflict_stores_the_rest(queue: Queue) -> None:
    await queue.enqueue_many([message(id=mid(1), idempotency_key="taken")])
    batch = [message(id=mid(100 + i), idempotency_key=f"b{i}") for i in range(1500)]
    batch[700] = message(id=mid(99), idempotency_key="taken")
    results = await queue.enqueue_each(batch)
    assert isinstance(results[700], IdempotencyConflict)
    created = [r for r in results if not isinstance(r, IdempotencyConflict) and r.created]
    assert len(created) == 1499
    assert await queue.active_count() == 1500


async def test_describe_keeps_metadata_campaign_and_times(queue: Queue) -> None:
    meta = json.dumps({"user": 42, "tags": ["a", "é"]})
    before = time.time()
    m = message(id=mid(1), metadata=meta, campaign="spring", stream="broadcast")
    plain = message(id=mid(2))
    await queue.enqueue_many([m, plain])
    (v, w) = await queue.describe([mid(1), mid(2)])
    assert (v.id, v.account, v.state, v.attempts, v.rcpt) == (mid(1), "acme", "queued", 0, m.rcpt)
    assert (v.campaign, v.stream, json.loads(v.metadata or "")) == (
        "spring",
        "broadcast",
        {"user": 42, "tags": ["a", "é"]},
    )
    assert v.idempotency_key == m.idempotency_key
    assert before - 1 <= v.enqueued_at <= time.time() + 1
    assert v.due_at == m.due_at and v.last_reply_code is None
    assert (w.id, w.metadata, w.campaign) == (mid(2), None, None)
    assert await queue.describe(["missing"]) == []
    assert [x.id for x in await queue.describe([mid(2), "missing", mid(1)])] == [mid(2), mid(1)]


async def test_finished_messages_are_described_with_their_last_attempt(queue: Queue) -> None:
    await queue.enqueue_many([message(id=mid(1), metadata='{"k": 1}'), message(id=mid(2))])
    lease = await queue.register_worker()
    now = time.time()
    await queue.claim(lease, 10, now)
    await queue.mark_committing(lease, [mid(1)])
    await queue.record_outcomes(
        lease,
        [
            delivered(mid(1)),
            OutcomeRecord(
                id=mid(2),
                state=MessageState.DEFERRED,
                retry_at=now + 3600,
                reply_code=451,
                reply_text="4.7.1 greylisted",
                source_ip="127.0.0.3",
            ),
        ],
    )
    done, later = await queue.describe([mid(1), mid(2)])
    assert (done.state, done.attempts, done.last_reply_code, done.metadata) == (
        "delivered",
        1,
        250,
        '{"k": 1}',
    )
    assert (done.source_ip, done.platform_domain, done.mx_host) == (
        "127.0.0.2",
        "mta1.example",
        "mx.gmail.example",
    )
    assert done.due_at is None
    assert (later.state, later.last_reply_text, later.due_at) == (
        "deferred",
        "4.7.1 greylisted",
        now + 3600,
    )
    attempts = await queue.attempts([mid(1), mid(2), "missing"])
    assert attempts["missing"] == []
    (a,) = attempts[mid(1)]
    assert (a.state, a.reply_code, a.source_ip, a.mx_host) == (
        "delivered",
        250,
        "127.0.0.2",
        "mx.gmail.example",
    )
    (b,) = attempts[mid(2)]
    assert (b.state, b.reply_code, b.reply_text) == ("deferred", 451, "4.7.1 greylisted")


async def test_listing_is_per_account_newest_first_by_cursor(queue: Queue) -> None:
    mine = [
        message(id=mid(n), campaign="spring" if n % 2 else "summer", account="acme")
        for n in range(1, 11)
    ]
    theirs = [message(id=mid(n), campaign="spring", account="other") for n in range(11, 15)]
    await queue.enqueue_many(mine + theirs)

    pages = []
    before = None
    while page := await queue.list_messages("acme", before=before, limit=3):
        pages.append([v.id for v in page])
        before = page[-1].id
    assert [i for p in pages for i in p] == [mid(n) for n in range(10, 0, -1)]
    assert [len(p) for p in pages] == [3, 3, 3, 1]

    spring = await queue.list_messages("acme", campaign="spring", limit=100)
    assert [v.id for v in spring] == [mid(n) for n in (9, 7, 5, 3, 1)]
    assert all(v.account == "acme" for v in spring)
    page = await queue.list_messages("acme", campaign="spring", before=mid(5), limit=100)
    assert [v.id for v in page] == [mid(3), mid(1)]
    assert await queue.list_messages("acme", campaign="autumn") == []
    assert [v.id for v in await queue.list_messages("other")] == [mid(n) for n in (14, 13, 12, 11)]


async def test_listing_filters_by_state(queue: Queue) -> None:
    await queue.enqueue_many([message(id=mid(n)) for n in range(1, 5)])
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, 2, time.time())
    await queue.mark_committing(lease, [c.id for c in claimed])
    await queue.record_outcomes(lease, [delivered(c) for c in claimed])
    done = {c.id for c in claimed}
    got = await queue.list_messages("acme", state=MessageState.DELIVERED)
    assert {v.id for v in got} == done
    waiting = await queue.list_messages("acme", state=MessageState.QUEUED)
    assert {v.id for v in waiting} == {mid(n) for n in range(1, 5)} - done
    assert await queue.list_messages("acme", state=MessageState.BOUNCED) == []
