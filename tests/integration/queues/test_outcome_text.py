"""Outcomes carrying a stranger's bytes: every backend stores them, none blocks a batch.

Issue 10, finding 1: one reply with invalid UTF-8 (`550 5.1.1 \\xff\\xfe`, decoded with
surrogate escapes) made SQLite raise UnicodeEncodeError and PostgreSQL's jsonb refuse the
batch, and the outcome writer retried that batch forever. Held for both backends.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from dispatcher.engine.group_commit import OutcomeWriter
from queues.errors import InvalidQueueInput
from queues.protocol import MessageState, OutcomeRecord, Queue
from tests.support.queues import delivered, messages

HOSTILE = (
    "5.1.1 \udcff\udcfe",  # surrogate escapes (what a surrogateescape decoder leaves)
    "lone \ud800 surrogate",
    "nul \x00 inside",
    "escape \x1b[31mred\x1b[0m and bell \x07",
)


def _storable(text: str | None) -> bool:
    if text is None:
        return True
    text.encode("utf-8")  # raises on surrogates
    return "\x00" not in text and "\x1b" not in text and "\x07" not in text


async def _claimed(queue: Queue, n: int) -> tuple[list[str], object]:
    sent = messages(n)
    await queue.enqueue_many(sent)
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, n, time.time())
    assert len(claimed) == n
    ids = [c.id for c in claimed]
    assert await queue.mark_committing(lease, ids) == set(ids)
    return ids, lease


async def test_every_text_field_of_an_outcome_is_stored_clean(queue: Queue) -> None:
    ids, lease = await _claimed(queue, len(HOSTILE))
    outcomes = [
        delivered(i, reply_text=t, source_ip=t, platform_domain=t, mx_host=t)
        for i, t in zip(ids, HOSTILE, strict=True)
    ]
    assert await queue.record_outcomes(lease, outcomes) == len(ids)  # type: ignore[arg-type]
    records = {r.id: r for r in await queue.get(ids)}
    for i, text in zip(ids, HOSTILE, strict=True):
        r = records[i]
        assert r.state == MessageState.DELIVERED
        assert _storable(r.last_reply_text) and _storable(r.source_ip)
        assert _storable(r.platform_domain)
        # What was readable stays readable.
        assert r.last_reply_text is not None
        assert r.last_reply_text.split()[0] == text.split()[0].encode("utf-8", "replace").decode()


async def test_a_batch_refused_for_its_data_stores_nothing(queue: Queue) -> None:
    ids, lease = await _claimed(queue, 3)
    bad = [delivered(ids[0]), delivered(ids[1], reply_code=5000), delivered(ids[2])]
    with pytest.raises(InvalidQueueInput):
        await queue.record_outcomes(lease, bad)  # type: ignore[arg-type]
    assert {r.state for r in await queue.get(ids)} == {MessageState.COMMITTING}


async def test_writer_splits_a_refused_batch_and_writes_a_placeholder(queue: Queue) -> None:
    """One record no backend accepts must not hold back the 40 around it."""
    ids, lease = await _claimed(queue, 41)
    writer = OutcomeWriter(queue, lease, batch_size=1000)  # type: ignore[arg-type]
    for n, i in enumerate(ids):
        writer.add(delivered(i, reply_code=-7 if n == 17 else 250, reply_text=f"ok {n}"))
    assert writer.age() >= 0.0
    assert await writer.drain(within=30.0)
    assert writer.pending == 0 and writer.age() == 0.0
    assert writer.placeholders == 1 and writer.dropped == 0
    records = {r.id: r for r in await queue.get(ids)}
    assert {r.state for r in records.values()} == {MessageState.DELIVERED}
    poisoned = records[ids[17]]
    assert poisoned.last_reply_code is None
    assert "not storable" in (poisoned.last_reply_text or "")
    assert [records[i].last_reply_text for i in ids[:17]] == [f"ok {n}" for n in range(17)]
    events = [e for e in await queue.read_events(0, 1000) if e.kind == "outcome.placeholder"]
    assert [(e.message_id, e.data["state"]) for e in events] == [(ids[17], "delivered")]


async def test_writer_keeps_the_batch_when_the_queue_is_unreachable(queue: Queue) -> None:
    """A connection error is not a data error: nothing is split, dropped or replaced."""
    ids, lease = await _claimed(queue, 4)

    class Unreachable:
        calls = 0

        async def record_outcomes(self, lease: object, outcomes: object) -> int:
            self.calls += 1
            raise ConnectionError("queue unreachable")

    down = Unreachable()
    writer = OutcomeWriter(down, lease, batch_size=1000)  # type: ignore[arg-type]
    for i in ids:
        writer.add(delivered(i))
    assert not await writer.drain(within=0.5)
    assert writer.pending == 4 and writer.placeholders == 0 and writer.dropped == 0
    await asyncio.sleep(0.05)
    assert writer.age() > 0.0
    writer._queue = queue  # type: ignore[assignment]  # the queue is back
    assert await writer.drain(within=30.0)
    assert {r.state for r in await queue.get(ids)} == {MessageState.DELIVERED}


def test_placeholder_keeps_the_state_and_a_retry_time() -> None:
    from dispatcher.engine.group_commit import placeholder

    rec = OutcomeRecord("m1", MessageState.DEFERRED, retry_at=float("nan"), reply_code=4242)
    p = placeholder(rec, "ValueError")
    assert p.state == MessageState.DEFERRED and p.reply_code is None
    assert p.retry_at is not None and p.retry_at > time.time()
