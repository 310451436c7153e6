"""Held mail (`ambiguous`) on every backend: listed with the same reason and reply text,
released as a deliberate resend, resolved without sending (see conftest.py for fixtures).

Written only against queues.protocol: nothing here may know which backend runs.
"""

from __future__ import annotations

import time

import pytest

from queues.errors import InvalidQueueInput
from queues.protocol import (
    WORKER_LOST_TEXT,
    Event,
    HeldFilter,
    HeldReason,
    MessageState,
    NewMessage,
    OutcomeRecord,
    Queue,
)
from tests.support.queues import MakeQueue, delivered, message

S = MessageState
HOUR = 3600.0
NO_REPLY_TEXT = "connection lost after the final dot"


async def events(queue: Queue) -> list[Event]:
    out: list[Event] = []
    after = 0
    while page := await queue.read_events(after, 100):
        out += page
        after = page[-1].seq
    return out


async def hold_by_no_reply(queue: Queue, msgs: list[NewMessage], now: float) -> None:
    """Sent, dot written, no reply: the engine's ambiguous outcome."""
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, len(msgs), now)
    assert {c.id for c in claimed} == {m.id for m in msgs}
    assert await queue.mark_committing(lease, [m.id for m in msgs]) == {m.id for m in msgs}
    outcomes = [
        OutcomeRecord(
            m.id, S.AMBIGUOUS, reply_text=NO_REPLY_TEXT, source_ip="127.0.0.2", mx_host="mx.x"
        )
        for m in msgs
    ]
    assert await queue.record_outcomes(lease, outcomes) == len(msgs)


async def test_held_lists_both_kinds_with_the_same_words(make_queue: MakeQueue) -> None:
    worker, rescuer = await make_queue(), await make_queue()
    now = time.time()
    lost = message(account="acme", campaign="spring", due_at=now - 10)
    dropped = message(account="other", campaign="autumn", due_at=now - 5)
    await worker.enqueue_many([dropped])
    await hold_by_no_reply(worker, [dropped], now)
    await worker.enqueue_many([lost])
    lease = await worker.register_worker()
    assert [c.id for c in await worker.claim(lease, 10, now)] == [lost.id]
    assert await worker.mark_committing(lease, [lost.id]) == {lost.id}
    await make_queue.crash(worker)
    assert (await rescuer.recover(now + HOUR)).ambiguous == 1

    held = await rescuer.held(HeldFilter())
    assert await rescuer.held_count() == 2
    by_id = {h.id: h for h in held}
    assert set(by_id) == {lost.id, dropped.id}
    w, d = by_id[lost.id], by_id[dropped.id]
    assert (w.reason, w.reply_code, w.reply_text) == (
        HeldReason.WORKER_LOST,
        None,
        WORKER_LOST_TEXT,
    )
    assert (d.reason, d.reply_code, d.reply_text) == (HeldReason.NO_REPLY, None, NO_REPLY_TEXT)
    assert (w.account, w.campaign, w.stream, w.rcpt, w.attempts, w.resends) == (
        "acme",
        "spring",
        "transactional",
        lost.rcpt,
        1,
        0,
    )
    assert (d.source_ip, d.mx_host) == ("127.0.0.2", "mx.x")
    assert now - 5 <= d.held_at <= time.time() + 1
    # Longest held first: the no-reply one was held before the recovery ran.
    assert [h.id for h in held] == [dropped.id, lost.id]

    assert [h.id for h in await rescuer.held(HeldFilter(account="acme"))] == [lost.id]
    assert [h.id for h in await rescuer.held(HeldFilter(campaign="autumn"))] == [dropped.id]
    assert [h.id for h in await rescuer.held(HeldFilter(ids=(lost.id,)))] == [lost.id]
    assert await rescuer.held(HeldFilter(held_before=now - HOUR)) == []
    assert await rescuer.held(HeldFilter(stream="broadcast")) == []
    assert len(await rescuer.held(HeldFilter(), limit=1)) == 1


async def test_release_queues_held_mail_again_as_a_deliberate_resend(queue: Queue) -> None:
    now = time.time()
    urgent = message(account="acme", priority=5, due_at=now - 10)
    plain = message(account="acme", due_at=now - 5)
    other = message(account="other", due_at=now - 5)
    await queue.enqueue_many([urgent, plain, other])
    await hold_by_no_reply(queue, [urgent, plain, other], now)

    assert await queue.release_held(HeldFilter(account="acme"), now + 1) == 2
    assert await queue.release_held(HeldFilter(account="acme"), now + 2) == 0  # once
    got = {r.id: r for r in await queue.get([urgent.id, plain.id, other.id])}
    assert (got[urgent.id].state, got[plain.id].state) == (S.QUEUED, S.QUEUED)
    assert got[other.id].state is S.AMBIGUOUS
    assert await queue.held_count() == 1

    released = [e for e in await events(queue) if e.kind == "message.released"]
    assert {e.message_id for e in released} == {urgent.id, plain.id}
    assert all(e.data["resends"] == 1 for e in released)

    # Claimable again, with its own priority; its history counts the resend.
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, 10, now + 1)
    assert [c.id for c in claimed] == [urgent.id, plain.id]
    assert claimed[0].priority == 5 and claimed[0].attempts == 1
    assert await queue.mark_committing(lease, [urgent.id, plain.id]) == {urgent.id, plain.id}
    again = OutcomeRecord(plain.id, S.AMBIGUOUS, reply_text=NO_REPLY_TEXT)
    assert await queue.record_outcomes(lease, [delivered(urgent.id), again]) == 2
    (h,) = await queue.held(HeldFilter(account="acme"))
    assert (h.id, h.resends, h.attempts) == (plain.id, 1, 2)


async def test_release_lifts_an_expiry_that_has_passed(queue: Queue) -> None:
    now = time.time()
    m = message(due_at=now - 10, expires_at=now + 60)
    await queue.enqueue_many([m])
    await hold_by_no_reply(queue, [m], now)
    assert await queue.release_held(HeldFilter(ids=(m.id,)), now + 1) == 1
    lease = await queue.register_worker()
    assert [c.id for c in await queue.claim(lease, 10, now + 2 * HOUR)] == [m.id]


async def test_resolve_settles_held_mail_without_sending(queue: Queue) -> None:
    now = time.time()
    seen, gone, kept = (message(due_at=now - 10 + i) for i in range(3))
    await queue.enqueue_many([seen, gone, kept])
    await hold_by_no_reply(queue, [seen, gone, kept], now)

    assert await queue.resolve_held(HeldFilter(ids=(seen.id,)), S.DELIVERED, now + 1) == 1
    assert await queue.resolve_held(HeldFilter(ids=(gone.id,)), S.FAILED, now + 1) == 1
    assert await queue.resolve_held(HeldFilter(ids=(seen.id,)), S.FAILED, now + 2) == 0
    got = {r.id: r for r in await queue.get([seen.id, gone.id, kept.id])}
    assert (got[seen.id].state, got[gone.id].state, got[kept.id].state) == (
        S.DELIVERED,
        S.FAILED,
        S.AMBIGUOUS,
    )
    assert got[seen.id].last_reply_text == (
        f"resolved as delivered by an operator; held for: {NO_REPLY_TEXT}"
    )
    assert [h.id for h in await queue.held(HeldFilter())] == [kept.id]
    resolved = [e for e in await events(queue) if e.kind == "message.resolved"]
    assert {(e.message_id, e.data["state"]) for e in resolved} == {
        (seen.id, "delivered"),
        (gone.id, "failed"),
    }
    with pytest.raises(InvalidQueueInput) as err:
        await queue.resolve_held(HeldFilter(), S.QUEUED, now)
    assert err.value.field == "state"
