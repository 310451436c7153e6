"""The Queue contract, held against every backend (see conftest.py for `queue`/`make_queue`).

Written only against queues.protocol: nothing here may know which backend runs.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from queues.errors import IdempotencyConflict, LeaseLost
from queues.protocol import Lease, MessageState, OutcomeRecord, Queue
from tests.support.queues import MakeQueue, delivered, ids, message, messages

HOUR = 3600.0


async def states(queue: Queue, wanted: list[str]) -> dict[str, MessageState]:
    return {r.id: r.state for r in await queue.get(wanted)}


async def assert_stale_claim_refused(queue: Queue, lease: Lease, now: float) -> None:
    try:
        got = await queue.claim(lease, 100, now)
    except LeaseLost:
        return
    assert got == [], "a stale lease must not claim"


# -- enqueue and idempotency -------------------------------------------------------------


async def test_round_trip_enqueue_claim_outcome(queue: Queue) -> None:
    now = time.time()
    sent = [message(priority=0, pool="warm", campaign="spring"), message(), message()]
    results = await queue.enqueue_many(sent)
    assert [(r.id, r.created) for r in results] == [(m.id, True) for m in sent]

    lease = await queue.register_worker()
    claimed = await queue.claim(lease, 10, now)
    assert ids(claimed) == ids(sent)
    by_id = {c.id: c for c in claimed}
    for m in sent:
        got = by_id[m.id]
        assert (got.account, got.rcpt, got.rcpt_domain, got.author_domain) == (
            m.account,
            m.rcpt,
            m.rcpt_domain,
            m.author_domain,
        )
        assert (got.body, got.verp_token, got.message_id) == (m.body, m.verp_token, m.message_id)
        assert (got.stream, got.priority, got.campaign, got.pool) == (
            m.stream,
            m.priority,
            m.campaign,
            m.pool,
        )
        assert got.attempts == 0
        assert got.lease == lease
    assert set((await states(queue, list(ids(sent)))).values()) == {MessageState.SENDING}

    a, b, c = sent
    assert await queue.mark_committing(lease, [a.id, b.id]) == {a.id, b.id}
    applied = await queue.record_outcomes(
        lease,
        [
            delivered(a.id),
            OutcomeRecord(
                id=b.id,
                state=MessageState.BOUNCED,
                reply_code=550,
                reply_text="5.1.1 no such user",
                source_ip="127.0.0.3",
                platform_domain="mta2.example",
            ),
            OutcomeRecord(
                id=c.id,
                state=MessageState.DEFERRED,
                retry_at=now + HOUR,
                reply_code=421,
                reply_text="4.7.0 try later",
                source_ip="127.0.0.2",
            ),
        ],
    )
    assert applied == 3
    records = {r.id: r for r in await queue.get([a.id, b.id, c.id])}
    assert records[a.id].state is MessageState.DELIVERED
    assert (records[a.id].last_reply_code, records[a.id].last_reply_text) == (250, "2.0.0 OK")
    assert (records[a.id].source_ip, records[a.id].platform_domain) == (
        "127.0.0.2",
        "mta1.example",
    )
    assert records[b.id].state is MessageState.BOUNCED
    assert records[b.id].last_reply_code == 550
    assert records[c.id].state is MessageState.DEFERRED
    assert all(r.attempts == 1 for r in records.values())
    assert await queue.claim(lease, 10, now) == []


async def test_same_key_same_payload_returns_the_original(queue: Queue) -> None:
    first = message()
    again = message(
        idempotency_key=first.idempotency_key, payload_hash=first.payload_hash, body=b"x"
    )
    (r1,) = await queue.enqueue_many([first])
    (r2,) = await queue.enqueue_many([again])
    assert (r1.id, r1.created) == (first.id, True)
    assert (r2.id, r2.created) == (first.id, False)
    assert await queue.get([again.id]) == []
    assert await queue.active_count() == 1


async def test_same_key_other_payload_conflicts_and_stores_nothing(queue: Queue) -> None:
    first = message()
    await queue.enqueue_many([first])
    fresh_before, fresh_after = message(), message()
    clash = message(idempotency_key=first.idempotency_key)
    with pytest.raises(IdempotencyConflict) as info:
        await queue.enqueue_many([fresh_before, clash, fresh_after])
    assert isinstance(info.value, ValueError)
    assert info.value.existing_id == first.id
    assert info.value.idempotency_key == first.idempotency_key
    assert await queue.get([fresh_before.id, clash.id, fresh_after.id]) == []
    assert await queue.active_count() == 1
    # The fresh keys were not kept either: enqueuing them again creates them.
    results = await queue.enqueue_many([fresh_before, fresh_after])
    assert [r.created for r in results] == [True, True]


async def test_same_key_twice_in_one_batch(queue: Queue) -> None:
    first = message()
    twin = message(idempotency_key=first.idempotency_key, payload_hash=first.payload_hash)
    results = await queue.enqueue_many([first, twin])
    assert [(r.id, r.created) for r in results] == [(first.id, True), (first.id, False)]
    assert await queue.active_count() == 1

    other = message()
    clash = message(idempotency_key=other.idempotency_key)
    with pytest.raises(IdempotencyConflict):
        await queue.enqueue_many([other, clash])
    assert await queue.get([other.id, clash.id]) == []


async def test_same_key_in_two_accounts_is_two_messages(queue: Queue) -> None:
    a = message(account="acme")
    b = message(account="globex", idempotency_key=a.idempotency_key)
    results = await queue.enqueue_many([a, b])
    assert [(r.id, r.created) for r in results] == [(a.id, True), (b.id, True)]


async def test_key_survives_prune_of_its_message(queue: Queue) -> None:
    m = message()
    await queue.enqueue_many([m])
    lease = await queue.register_worker()
    await queue.claim(lease, 10, time.time())
    await queue.mark_committing(lease, [m.id])
    assert await queue.record_outcomes(lease, [delivered(m.id)]) == 1

    later = time.time() + 10 * HOUR
    assert await queue.prune(later, HOUR, 100 * HOUR) == (1, 0)
    assert await queue.get([m.id]) == []
    retry = message(idempotency_key=m.idempotency_key, payload_hash=m.payload_hash)
    (result,) = await queue.enqueue_many([retry])
    assert (result.id, result.created) == (m.id, False)
    assert await queue.active_count() == 0

    # Once the key's own retention has passed, the key is gone too.
    assert await queue.prune(later, HOUR, HOUR) == (0, 1)
    (result,) = await queue.enqueue_many([retry])
    assert (result.id, result.created) == (retry.id, True)


async def test_prune_keeps_unfinished_and_recent_messages(queue: Queue) -> None:
    waiting, old_done = message(), message()
    await queue.enqueue_many([waiting, old_done])
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, 1, time.time())
    assert len(claimed) == 1
    done_id = claimed[0].id
    await queue.record_outcomes(lease, [delivered(done_id)])
    # Not old enough yet.
    assert await queue.prune(time.time(), HOUR, HOUR) == (0, 0)
    assert await queue.prune(time.time() + 2 * HOUR, HOUR, 100 * HOUR) == (1, 0)
    remaining = {r.id for r in await queue.get([waiting.id, old_done.id])}
    assert remaining == {waiting.id, old_done.id} - {done_id}


# -- claim order and due times -------------------------------------------------------------


async def test_claim_orders_by_priority_then_due_time(queue: Queue) -> None:
    now = time.time()
    low_early = message(priority=0, due_at=now - 300)
    low_late = message(priority=0, due_at=now - 100)
    high_late = message(priority=5, due_at=now - 50)
    high_early = message(priority=5, due_at=now - 200)
    mid = message(priority=2, due_at=now - 10)
    future_high = message(priority=9, due_at=now + HOUR)
    await queue.enqueue_many([low_early, low_late, high_late, high_early, mid, future_high])
    lease = await queue.register_worker()
    order = []
    for _ in range(6):
        batch = await queue.claim(lease, 1, now)
        order += [m.id for m in batch]
    assert order == [high_early.id, high_late.id, mid.id, low_early.id, low_late.id]


async def test_claim_respects_limit(queue: Queue) -> None:
    await queue.enqueue_many(messages(7))
    lease = await queue.register_worker()
    now = time.time()
    assert len(await queue.claim(lease, 3, now)) == 3
    assert len(await queue.claim(lease, 3, now)) == 3
    assert len(await queue.claim(lease, 3, now)) == 1
    assert await queue.claim(lease, 3, now) == []


async def test_deferred_is_not_claimable_until_due(queue: Queue) -> None:
    now = time.time()
    m = message()
    await queue.enqueue_many([m])
    lease = await queue.register_worker()
    await queue.claim(lease, 10, now)
    retry_at = now + HOUR
    deferral = OutcomeRecord(
        id=m.id, state=MessageState.DEFERRED, retry_at=retry_at, reply_code=451
    )
    assert await queue.record_outcomes(lease, [deferral]) == 1
    assert await queue.next_due() == pytest.approx(retry_at)
    assert await queue.claim(lease, 10, now) == []
    assert await queue.claim(lease, 10, retry_at - 1) == []
    (again,) = await queue.claim(lease, 10, retry_at)
    assert again.id == m.id
    assert again.attempts == 1


async def test_message_due_later_waits(queue: Queue) -> None:
    now = time.time()
    m = message(due_at=now + 60)
    await queue.enqueue_many([m])
    lease = await queue.register_worker()
    assert await queue.claim(lease, 10, now) == []
    assert [c.id for c in await queue.claim(lease, 10, now + 60)] == [m.id]


async def test_requeue_without_attempt(queue: Queue) -> None:
    now = time.time()
    m = message()
    await queue.enqueue_many([m])
    lease = await queue.register_worker()
    await queue.claim(lease, 10, now)
    not_now = OutcomeRecord(
        id=m.id, state=MessageState.QUEUED, counts_attempt=False, retry_at=now + 5
    )
    assert await queue.record_outcomes(lease, [not_now]) == 1
    (record,) = await queue.get([m.id])
    assert (record.state, record.attempts) == (MessageState.QUEUED, 0)
    assert await queue.claim(lease, 10, now) == []
    assert [c.id for c in await queue.claim(lease, 10, now + 5)] == [m.id]


async def test_expired_message_fails_instead_of_being_claimed(queue: Queue) -> None:
    now = time.time()
    stale = message(expires_at=now - 1)
    fresh = message(expires_at=now + HOUR)
    forever = message()
    await queue.enqueue_many([stale, fresh, forever])
    lease = await queue.register_worker()
    assert ids(await queue.claim(lease, 10, now)) == {fresh.id, forever.id}
    (record,) = await queue.get([stale.id])
    assert record.state is MessageState.FAILED
    assert record.last_reply_text is not None and "expired" in record.last_reply_text
    assert record.attempts == 0


async def test_expiry_after_a_deferral_keeps_the_last_reply(queue: Queue) -> None:
    now = time.time()
    m = message(expires_at=now + 100)
    await queue.enqueue_many([m])
    lease = await queue.register_worker()
    await queue.claim(lease, 10, now)
    await queue.record_outcomes(
        lease,
        [
            OutcomeRecord(
                id=m.id,
                state=MessageState.DEFERRED,
                retry_at=now + 200,
                reply_code=421,
                reply_text="4.2.1 mailbox busy",
            )
        ],
    )
    assert await queue.claim(lease, 10, now + 200) == []
    (record,) = await queue.get([m.id])
    assert record.state is MessageState.FAILED
    assert record.last_reply_code == 421
    assert record.last_reply_text is not None and "mailbox busy" in record.last_reply_text
    assert await queue.active_count() == 0


async def test_outcome_needs_retry_at_when_deferred(queue: Queue) -> None:
    m = message()
    await queue.enqueue_many([m])
    lease = await queue.register_worker()
    await queue.claim(lease, 10, time.time())
    with pytest.raises(ValueError):
        await queue.record_outcomes(
            lease, [delivered(m.id), OutcomeRecord(id=m.id, state=MessageState.DEFERRED)]
        )
    (record,) = await queue.get([m.id])
    assert record.state is MessageState.SENDING  # nothing of the batch was applied


# -- leases and fencing --------------------------------------------------------------------


async def test_epochs_strictly_increase(make_queue: MakeQueue) -> None:
    a, b = await make_queue(), await make_queue()
    epochs = [(await q.register_worker()).epoch for q in (a, b, a, b, a)]
    assert epochs == sorted(epochs)
    assert len(set(epochs)) == len(epochs)


async def test_two_leases_never_claim_the_same_message(make_queue: MakeQueue) -> None:
    a, b = await make_queue(), await make_queue()
    la, lb = await a.register_worker(), await b.register_worker()

    async def drain(queue: Queue, lease: Lease) -> list[str]:
        got: list[str] = []
        while batch := await queue.claim(lease, 7, time.time()):
            got += [m.id for m in batch]
            await queue.record_outcomes(lease, [delivered(m) for m in batch])
        return got

    for _ in range(5):
        sent = messages(60)
        await a.enqueue_many(sent)
        got_a, got_b = await asyncio.gather(drain(a, la), drain(b, lb))
        assert not set(got_a) & set(got_b)
        assert len(got_a) + len(got_b) == len(sent)
        assert set(got_a) | set(got_b) == ids(sent)
    assert await a.active_count() == 0


async def test_heartbeat_of_a_live_lease(queue: Queue) -> None:
    lease = await queue.register_worker()
    assert await queue.heartbeat(lease) is True
    assert await queue.heartbeat(lease) is True


async def test_live_worker_is_not_recovered(make_queue: MakeQueue) -> None:
    worker, other = await make_queue(), await make_queue()
    m = message()
    await worker.enqueue_many([m])
    lease = await worker.register_worker()
    await worker.claim(lease, 10, time.time())
    await worker.heartbeat(lease)
    report = await other.recover(time.time())
    assert (report.workers, report.requeued, report.ambiguous) == (0, 0, 0)
    assert await worker.mark_committing(lease, [m.id]) == {m.id}


async def test_release_unheld_requeues_only_sending_not_held(make_queue: MakeQueue) -> None:
    """After a claim whose reply was lost: what the worker does not hold goes back, unstarted;
    what it holds, what is committing and another lease's messages stay."""
    worker, other = await make_queue(), await make_queue()
    now = time.time()
    held, lost, committing, others = message(), message(), message(), message()
    await worker.enqueue_many([held, lost, committing])
    lease = await worker.register_worker()
    assert len(await worker.claim(lease, 10, now)) == 3
    assert await worker.mark_committing(lease, [committing.id]) == {committing.id}
    await other.enqueue_many([others])
    other_lease = await other.register_worker()
    assert [c.id for c in await other.claim(other_lease, 10, now)] == [others.id]

    assert await worker.release_unheld(lease, [held.id]) == 1
    got = await states(worker, [held.id, lost.id, committing.id, others.id])
    assert got == {
        held.id: MessageState.SENDING,
        lost.id: MessageState.QUEUED,
        committing.id: MessageState.COMMITTING,
        others.id: MessageState.SENDING,
    }
    assert await worker.release_unheld(lease, [held.id]) == 0
    again = await worker.claim(lease, 10, now)
    assert [(c.id, c.attempts) for c in again] == [(lost.id, 0)]  # not an attempt
    assert await worker.mark_committing(lease, [held.id, lost.id]) == {held.id, lost.id}


async def test_wait_for_work_returns_within_its_timeout(queue: Queue) -> None:
    # Bounded by its timeout whatever the backend (the outer bound only catches a hang).
    for _ in range(3):
        await asyncio.wait_for(queue.wait_for_work(0.05), timeout=10.0)


async def test_lease_ttl_is_the_configured_one(make_queue: MakeQueue) -> None:
    assert (await make_queue(lease_ttl=7.5)).lease_ttl == 7.5
    assert (await make_queue()).lease_ttl > 0


async def test_recover_requeues_sending_and_holds_committing(make_queue: MakeQueue) -> None:
    worker, rescuer = await make_queue(), await make_queue()
    now = time.time()
    sending, committing = message(), message()
    await worker.enqueue_many([sending, committing])
    lease = await worker.register_worker()
    assert len(await worker.claim(lease, 10, now)) == 2
    assert await worker.mark_committing(lease, [committing.id]) == {committing.id}
    await make_queue.crash(worker)

    report = await rescuer.recover(now + HOUR)
    assert (report.workers, report.requeued, report.ambiguous) == (1, 1, 1)
    records = {r.id: r for r in await rescuer.get([sending.id, committing.id])}
    assert records[sending.id].state is MessageState.QUEUED
    assert records[sending.id].attempts == 0  # it never reached the final dot
    assert records[committing.id].state is MessageState.AMBIGUOUS

    again = await rescuer.recover(now + HOUR)
    assert (again.workers, again.requeued, again.ambiguous) == (0, 0, 0)
    new_lease = await rescuer.register_worker()
    assert new_lease.epoch > lease.epoch
    assert [c.id for c in await rescuer.claim(new_lease, 10, now + HOUR)] == [sending.id]


async def test_recover_with_retry_policy_requeues_committing(make_queue: MakeQueue) -> None:
    worker, rescuer = await make_queue(), await make_queue()
    now = time.time()
    news = message(stream="broadcast")
    receipt = message(stream="transactional")
    await worker.enqueue_many([news, receipt])
    lease = await worker.register_worker()
    await worker.claim(lease, 10, now)
    assert await worker.mark_committing(lease, [news.id, receipt.id]) == {news.id, receipt.id}
    await make_queue.crash(worker)

    policy = {"broadcast": "retry", "transactional": "hold"}
    report = await rescuer.recover(now + HOUR, policy)
    assert (report.workers, report.requeued, report.ambiguous) == (1, 1, 1)
    assert await states(rescuer, [news.id, receipt.id]) == {
        news.id: MessageState.QUEUED,
        receipt.id: MessageState.AMBIGUOUS,
    }


async def test_stale_lease_is_fenced_after_recover(make_queue: MakeQueue) -> None:
    worker, rescuer = await make_queue(), await make_queue()
    now = time.time()
    batch = messages(3)
    await worker.enqueue_many(batch)
    old = await worker.register_worker()
    assert len(await worker.claim(old, 10, now)) == 3
    await make_queue.crash(worker)
    assert (await rescuer.recover(now + HOUR)).workers == 1

    # Every write under the old epoch is refused, whichever connection carries it.
    assert await rescuer.mark_committing(old, list(ids(batch))) == set()
    assert await rescuer.record_outcomes(old, [delivered(m.id) for m in batch]) == 0
    assert await rescuer.heartbeat(old) is False
    await assert_stale_claim_refused(rescuer, old, now + HOUR)

    # The new owner is not disturbed by the old one.
    new = await rescuer.register_worker()
    claimed = await rescuer.claim(new, 10, now + HOUR)
    assert ids(claimed) == ids(batch)
    assert await rescuer.mark_committing(old, list(ids(batch))) == set()
    assert await rescuer.record_outcomes(old, [delivered(m) for m in claimed]) == 0
    assert await rescuer.mark_committing(new, list(ids(batch))) == ids(batch)
    assert await rescuer.record_outcomes(new, [delivered(m) for m in claimed]) == 3
    assert set((await states(rescuer, list(ids(batch)))).values()) == {MessageState.DELIVERED}


async def test_a_lease_cannot_write_another_leases_messages(make_queue: MakeQueue) -> None:
    a, b = await make_queue(), await make_queue()
    now = time.time()
    first, second = message(due_at=now - 2), message(due_at=now - 1)
    await a.enqueue_many([first, second])
    la, lb = await a.register_worker(), await b.register_worker()
    assert [m.id for m in await a.claim(la, 1, now)] == [first.id]
    assert [m.id for m in await b.claim(lb, 1, now)] == [second.id]
    # Both leases are current: only the message-level fence stands in the way.
    assert await a.mark_committing(la, [second.id]) == set()
    assert await a.record_outcomes(la, [delivered(second.id)]) == 0
    assert await b.mark_committing(lb, [first.id, second.id]) == {second.id}
    assert await b.record_outcomes(lb, [delivered(first.id)]) == 0
    assert await states(a, [first.id, second.id]) == {
        first.id: MessageState.SENDING,
        second.id: MessageState.COMMITTING,
    }


async def test_outcome_for_a_message_not_held_is_not_applied(queue: Queue) -> None:
    mine, other = message(), message()
    await queue.enqueue_many([mine, other])
    lease = await queue.register_worker()
    (claimed,) = await queue.claim(lease, 1, time.time())
    unclaimed = other.id if claimed.id == mine.id else mine.id
    assert await queue.record_outcomes(lease, [delivered(claimed), delivered(unclaimed)]) == 1
    assert await queue.mark_committing(lease, [unclaimed]) == set()
    # Applied once: the message is no longer held by the worker afterwards.
    assert await queue.record_outcomes(lease, [delivered(claimed)]) == 0
    assert (await states(queue, [unclaimed]))[unclaimed] is MessageState.QUEUED


async def test_recover_run_concurrently_takes_over_once(make_queue: MakeQueue) -> None:
    now = time.time()
    worker = await make_queue()
    rescuers = [await make_queue(), await make_queue(), await make_queue()]
    batch = messages(20)
    await worker.enqueue_many(batch)
    leases = [await worker.register_worker() for _ in range(2)]
    first = await worker.claim(leases[0], 10, now)
    second = await worker.claim(leases[1], 10, now)
    await worker.mark_committing(leases[0], [m.id for m in first[:4]])
    await worker.mark_committing(leases[1], [m.id for m in second[:3]])
    await make_queue.crash(worker)

    reports = await asyncio.gather(*(r.recover(now + HOUR) for r in rescuers * 2))
    assert sum(r.workers for r in reports) == 2
    assert sum(r.requeued for r in reports) == 13
    assert sum(r.ambiguous for r in reports) == 7
    counts = await rescuers[0].counts()
    assert counts.by_state == {"queued": 13, "ambiguous": 7}


# -- status, cancel ------------------------------------------------------------------------


async def test_counts_next_due_and_active_count(queue: Queue) -> None:
    now = time.time()
    assert await queue.next_due() is None
    assert await queue.active_count() == 0
    warm = messages(3, pool="warm", due_at=now - 30)
    cold = [message(pool="cold", due_at=now - 10), message(pool="cold", due_at=now - 5)]
    nopool = message(due_at=now + 50)
    await queue.enqueue_many([*warm, *cold, nopool])
    assert await queue.next_due() == pytest.approx(now - 30)
    assert await queue.active_count() == 6

    lease = await queue.register_worker()
    claimed = await queue.claim(lease, 4, now)  # warm (earlier) first, then one cold
    assert ids(claimed) == ids(warm) | {cold[0].id}
    await queue.mark_committing(lease, [warm[0].id])
    await queue.record_outcomes(
        lease,
        [
            delivered(warm[1].id, source_ip="127.0.0.2"),
            delivered(cold[0].id, source_ip="127.0.0.3"),
            OutcomeRecord(
                id=warm[2].id,
                state=MessageState.DEFERRED,
                retry_at=now + 20,
                reply_code=450,
                source_ip="127.0.0.3",
            ),
        ],
    )
    counts = await queue.counts()
    assert counts.by_state == {"committing": 1, "delivered": 2, "deferred": 1, "queued": 2}
    assert counts.by_pool == {
        "warm": {"committing": 1, "delivered": 1, "deferred": 1},
        "cold": {"delivered": 1, "queued": 1},
    }
    assert counts.by_source_ip == {
        "127.0.0.2": {"delivered": 1},
        "127.0.0.3": {"delivered": 1, "deferred": 1},
    }
    assert await queue.active_count() == 4
    assert await queue.next_due() == pytest.approx(now - 5)


async def test_get_leaves_out_missing_ids(queue: Queue) -> None:
    m = message()
    await queue.enqueue_many([m])
    records = await queue.get([m.id, "no-such-message"])
    assert [(r.id, r.account, r.idempotency_key, r.rcpt) for r in records] == [
        (m.id, m.account, m.idempotency_key, m.rcpt)
    ]
    assert records[0].state is MessageState.QUEUED
    assert await queue.get([]) == []


async def test_cancel_account_or_campaign(queue: Queue) -> None:
    now = time.time()
    # Distinct due times fix the claim order (ties may go either way on a backend).
    in_flight = message(account="fraud", campaign="spring", due_at=now - 30)
    to_defer = message(account="fraud", campaign="spring", due_at=now - 20)
    spring = [in_flight, to_defer, message(account="fraud", campaign="spring", due_at=now - 10)]
    autumn = messages(2, account="fraud", campaign="autumn", due_at=now - 5)
    innocent = messages(2, account="acme", campaign="spring", due_at=now - 5)
    await queue.enqueue_many([*spring, *autumn, *innocent])
    lease = await queue.register_worker()
    # One spring message is in flight (cancel leaves it to its worker), one is deferred.
    assert [c.id for c in await queue.claim(lease, 1, now)] == [in_flight.id]
    assert [c.id for c in await queue.claim(lease, 1, now)] == [to_defer.id]
    deferral = OutcomeRecord(id=to_defer.id, state=MessageState.DEFERRED, retry_at=now + HOUR)
    assert await queue.record_outcomes(lease, [deferral]) == 1

    assert await queue.cancel("fraud", "spring") == 2
    assert await queue.cancel("fraud", "spring") == 0
    assert await queue.cancel("fraud") == 2
    all_ids = [m.id for m in [*spring, *autumn, *innocent]]
    got = await states(queue, all_ids)
    assert got[in_flight.id] is MessageState.SENDING
    assert {got[m.id] for m in [*spring[1:], *autumn]} == {MessageState.CANCELLED}
    assert {got[m.id] for m in innocent} == {MessageState.QUEUED}
    assert await queue.record_outcomes(lease, [delivered(in_flight.id)]) == 1
    remaining = await queue.claim(lease, 10, now + 2 * HOUR)
    assert ids(remaining) == ids(innocent)
    assert await queue.record_outcomes(lease, [delivered(m) for m in remaining]) == 2
    assert await queue.active_count() == 0
