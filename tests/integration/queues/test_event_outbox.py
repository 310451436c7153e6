"""The event outbox, held against every backend: outcome events are written by the
transaction that applies their outcomes (exactly one per applied outcome, none for a fenced
one), other events ride with a batch or are appended alone, and consumers read them by seq.

Written only against queues.protocol, like the conformance suite beside it.
"""

from __future__ import annotations

import time

from queues.protocol import Event, MessageState, OutcomeRecord, Queue
from tests.support.queues import MakeQueue, delivered, ids, message, messages

HOUR = 3600.0


async def all_events(queue: Queue) -> list[Event]:
    out: list[Event] = []
    after = 0
    while True:
        page = await queue.read_events(after, 2)  # small pages: paging is part of the contract
        if not page:
            return out
        out += page
        after = page[-1].seq


async def test_each_applied_outcome_has_its_event_in_the_same_write(queue: Queue) -> None:
    now = time.time()
    a, b, c, d = messages(4)
    await queue.enqueue_many([a, b, c, d])
    lease = await queue.register_worker()
    await queue.claim(lease, 10, now)
    await queue.mark_committing(lease, [a.id])
    pause = Event("ip.paused", now, {"source_ip": "127.0.0.2", "provider": "google"})
    applied = await queue.record_outcomes(
        lease,
        [
            delivered(a.id),
            OutcomeRecord(
                b.id,
                MessageState.BOUNCED,
                reply_code=550,
                reply_text="5.1.1 no such user",
                source_ip="127.0.0.3",
                category="InvalidRecipient",
            ),
            OutcomeRecord(
                c.id,
                MessageState.DEFERRED,
                retry_at=now + HOUR,
                reply_code=421,
                reply_text="4.7.28 rate limited",
                category="TransientFailure",
            ),
            # Not an attempt (released, or waiting for admission): no event.
            OutcomeRecord(d.id, MessageState.QUEUED, counts_attempt=False, retry_at=now),
        ],
        [pause],
    )
    assert applied == 4
    events = await all_events(queue)
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] > 0
    by_message = {e.message_id: e for e in events if e.message_id}
    assert set(by_message) == {a.id, b.id, c.id}
    assert by_message[a.id].kind == "message.delivered"
    assert by_message[a.id].account == a.account
    assert by_message[a.id].data["reply_code"] == 250
    assert by_message[b.id].kind == "message.bounced"
    assert by_message[b.id].data["category"] == "InvalidRecipient"
    assert by_message[b.id].data["reply_text"] == "5.1.1 no such user"
    assert by_message[b.id].data["source_ip"] == "127.0.0.3"
    assert by_message[c.id].kind == "message.deferred"
    assert by_message[c.id].data["retry_at"] == now + HOUR
    (other,) = [e for e in events if e.message_id is None]
    assert (other.kind, dict(other.data), other.at) == ("ip.paused", dict(pause.data), now)


async def test_fenced_outcomes_raise_no_event_but_sender_events_are_kept(
    make_queue: MakeQueue,
) -> None:
    worker, rescuer = await make_queue(), await make_queue()
    now = time.time()
    batch = messages(2)
    await worker.enqueue_many(batch)
    old = await worker.register_worker()
    await worker.claim(old, 10, now)
    await make_queue.crash(worker)
    await rescuer.recover(now + HOUR)
    before = await all_events(rescuer)

    slow = Event("ip.slowed", now, {"source_ip": "127.0.0.2"})
    assert await rescuer.record_outcomes(old, [delivered(m.id) for m in batch], [slow]) == 0

    new = [e for e in await all_events(rescuer) if e.seq > max([0, *(x.seq for x in before)])]
    assert [(e.kind, e.message_id) for e in new] == [("ip.slowed", None)]


async def test_recovery_and_expiry_raise_their_events(make_queue: MakeQueue) -> None:
    worker, rescuer = await make_queue(), await make_queue()
    now = time.time()
    sending, committing = message(), message()
    stale = message(expires_at=now - 1)
    await worker.enqueue_many([sending, committing])
    lease = await worker.register_worker()
    await worker.claim(lease, 10, now)
    await worker.mark_committing(lease, [committing.id])
    await make_queue.crash(worker)
    await rescuer.recover(now + HOUR)
    await rescuer.enqueue_many([stale])
    lease2 = await rescuer.register_worker()
    assert ids(await rescuer.claim(lease2, 10, now + HOUR)) == {sending.id}

    kinds = {e.message_id: e.kind for e in await all_events(rescuer)}
    # The requeued one never reached its dot: no outcome, no event.
    assert kinds == {committing.id: "message.ambiguous", stale.id: "message.failed"}


async def test_append_and_read_after_a_cursor(queue: Queue) -> None:
    now = time.time()
    await queue.append_events(
        [Event(f"ip.paused.{i}", now + i, {"i": i, "text": "bad\x00byte"}) for i in range(5)]
    )
    first = await queue.read_events(0, 3)
    assert [e.data["i"] for e in first] == [0, 1, 2]
    rest = await queue.read_events(first[-1].seq, 100)
    assert [e.data["i"] for e in rest] == [3, 4]
    assert await queue.read_events(rest[-1].seq, 100) == []
    assert "\x00" not in str(rest[0].data["text"])  # remote text made storable
    await queue.append_events([])
    assert await queue.record_outcomes(await queue.register_worker(), [], []) == 0


async def test_prune_drops_old_events(queue: Queue) -> None:
    now = time.time()
    await queue.append_events([Event("old", now - 40 * 86400), Event("new", now)])
    await queue.prune(now, retention=30 * 86400, idempotency_retention=7 * 86400)
    assert [e.kind for e in await all_events(queue)] == ["new"]
