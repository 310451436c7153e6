"""MarkWriter and OutcomeWriter against a real SQLite queue: batching, gathering during a
write, refusals, an unreachable queue, the bounded buffer, and writes shielded from
cancellation. `Gated` sits in front of the real queue to hold a write or make it fail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from dispatcher.engine.group_commit import MarkWriter, OutcomeWriter
from queues.protocol import Event, Lease, MessageState, OutcomeRecord, Queue
from queues.sqlite.backend import SqliteQueue
from tests.support.queues import delivered, messages


class Gated:
    """The real queue, with its two group-commit writes held at a gate or failing on demand
    (what a slow or unreachable database looks like to the writers)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()  # set when a write reaches the gate
        self.written = asyncio.Event()  # set when an outcome write returned from the queue
        self.fail: Exception | None = None
        self.mark_batches: list[list[str]] = []
        self.outcome_batches: list[list[str]] = []
        self.events_written: list[Event] = []

    async def _pass(self) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail

    async def mark_committing(self, lease: Lease, ids: Sequence[str]) -> set[str]:
        self.mark_batches.append(list(ids))
        await self._pass()
        return await self.queue.mark_committing(lease, ids)

    async def record_outcomes(
        self, lease: Lease, outcomes: Sequence[OutcomeRecord], events: Sequence[Event] = ()
    ) -> int:
        self.outcome_batches.append([o.id for o in outcomes])
        await self._pass()
        n = await self.queue.record_outcomes(lease, outcomes, events)
        self.events_written += events
        self.written.set()
        return n


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SqliteQueue]:
    q = SqliteQueue(tmp_path / "queue.db")
    await q.open()
    yield q
    await q.close()


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Background writer loops, cancelled at teardown."""
    out: list[asyncio.Task[Any]] = []
    yield out
    for t in out:
        t.cancel()
    await asyncio.gather(*out, return_exceptions=True)


async def claimed(queue: Queue, n: int) -> tuple[Lease, list[str]]:
    await queue.enqueue_many(messages(n))
    lease = await queue.register_worker()
    got = await queue.claim(lease, n, time.time())
    assert len(got) == n
    return lease, [c.id for c in got]


async def states(queue: Queue, ids: list[str]) -> list[MessageState]:
    return [r.state for r in await queue.get(ids)]


# -- MarkWriter ----------------------------------------------------------------------------------


async def test_marks_requested_in_one_turn_share_one_durable_write(
    queue: SqliteQueue, tasks: list[asyncio.Task[Any]]
) -> None:
    lease, ids = await claimed(queue, 20)
    gated = Gated(queue)
    writer = MarkWriter(gated, lease)  # type: ignore[arg-type]
    tasks.append(asyncio.create_task(writer.run()))
    futures = [writer.request(i) for i in ids]
    assert await asyncio.gather(*futures) == [True] * 20
    assert gated.mark_batches == [ids]
    assert writer.batches == 1 and writer.marks == 20
    assert await states(queue, ids) == [MessageState.COMMITTING] * 20


async def test_marks_arriving_during_a_write_go_out_together_when_it_returns(
    queue: SqliteQueue, tasks: list[asyncio.Task[Any]]
) -> None:
    lease, ids = await claimed(queue, 11)
    gated = Gated(queue)
    gated.gate.clear()
    writer = MarkWriter(gated, lease)  # type: ignore[arg-type]
    tasks.append(asyncio.create_task(writer.run()))
    first = writer.request(ids[0])
    await asyncio.wait_for(gated.entered.wait(), 5)
    assert writer.in_flight
    later = [writer.request(i) for i in ids[1:]]  # while the first write is held
    assert not first.done() and not any(f.done() for f in later)
    gated.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *later), 5) == [True] * 11
    assert gated.mark_batches == [ids[:1], ids[1:]]  # one write for all ten latecomers
    assert writer.batches == 2 and not writer.in_flight


async def test_a_mark_the_lease_does_not_hold_is_refused(
    queue: SqliteQueue, tasks: list[asyncio.Task[Any]]
) -> None:
    lease, ids = await claimed(queue, 2)
    other = await queue.register_worker()  # a worker that claimed nothing
    writer = MarkWriter(queue, other)
    tasks.append(asyncio.create_task(writer.run()))
    assert await asyncio.gather(*(writer.request(i) for i in ids)) == [False, False]
    assert writer.marks == 0
    assert await states(queue, ids) == [MessageState.SENDING] * 2
    mine = MarkWriter(queue, lease)
    tasks.append(asyncio.create_task(mine.run()))
    assert await mine.request(ids[0]) is True


async def test_an_unreachable_queue_refuses_the_batch_and_the_writer_goes_on(
    queue: SqliteQueue, tasks: list[asyncio.Task[Any]]
) -> None:
    lease, ids = await claimed(queue, 3)
    gated = Gated(queue)
    gated.fail = ConnectionError("database unreachable")
    writer = MarkWriter(gated, lease)  # type: ignore[arg-type]
    tasks.append(asyncio.create_task(writer.run()))
    assert list(await asyncio.gather(writer.request(ids[0]), writer.request(ids[1]))) == [False] * 2
    assert await states(queue, ids[:2]) == [MessageState.SENDING] * 2  # no dot: still sending
    gated.fail = None
    assert await writer.request(ids[2]) is True
    assert not tasks[0].done()


async def test_stopping_the_writer_refuses_the_marks_still_waiting(
    queue: SqliteQueue, tasks: list[asyncio.Task[Any]]
) -> None:
    lease, ids = await claimed(queue, 1)
    writer = MarkWriter(queue, lease, interval=30.0)  # a long gathering wait
    run = asyncio.create_task(writer.run())
    fut = writer.request(ids[0])
    await asyncio.sleep(0)  # the writer is now gathering
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    assert fut.done() and fut.result() is False
    assert await states(queue, ids) == [MessageState.SENDING]


async def test_stopping_the_writer_mid_write_resolves_the_batch_in_flight(
    queue: SqliteQueue,
) -> None:
    lease, ids = await claimed(queue, 3)
    gated = Gated(queue)
    gated.gate.clear()
    writer = MarkWriter(gated, lease)  # type: ignore[arg-type]
    run = asyncio.create_task(writer.run())
    held = [writer.request(i) for i in ids[:2]]
    await asyncio.wait_for(gated.entered.wait(), 5)  # the write of ids[:2] is on its way
    waiting = writer.request(ids[2])  # gathered for the next write
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    # Not granted: no session may write its dot, and none is left waiting forever.
    assert all(f.done() for f in held) and [f.result() for f in held] == [False, False]
    assert waiting.done() and waiting.result() is False
    assert writer.request(ids[2]).result() is False  # a stopped writer refuses at once
    gated.gate.set()  # the shielded write still lands: held as ambiguous by recovery
    for _ in range(200):
        if (await states(queue, ids[:2])) == [MessageState.COMMITTING] * 2:
            break
        await asyncio.sleep(0.01)
    assert await states(queue, ids) == [MessageState.COMMITTING] * 2 + [MessageState.SENDING]
    assert [f.result() for f in held] == [False, False]


# -- OutcomeWriter ------------------------------------------------------------------------------


async def test_outcomes_are_written_in_batches_with_their_events(
    queue: SqliteQueue, tasks: list[asyncio.Task[Any]]
) -> None:
    lease, ids = await claimed(queue, 25)
    assert await queue.mark_committing(lease, ids) == set(ids)
    gated = Gated(queue)
    applied: list[str] = []
    writer = OutcomeWriter(
        gated,  # type: ignore[arg-type]
        lease,
        interval=0.01,
        batch_size=10,
        on_applied=lambda records: applied.extend(r.id for r in records),
    )
    writer.add_event(Event("ip.paused", time.time(), {"ip": "127.0.0.2"}))
    for i in ids:
        writer.add(delivered(i))
    assert writer.pending == 26
    assert await writer.drain(within=10)
    assert [len(b) for b in gated.outcome_batches] == [10, 10, 5]
    assert [e.kind for e in gated.events_written] == ["ip.paused"]  # rode with the first
    assert applied == ids and writer.written == 25 and writer.pending == 0
    assert await states(queue, ids) == [MessageState.DELIVERED] * 25
    events = await queue.read_events(0, 1000)
    assert [e.kind for e in events].count("message.delivered") == 25


async def test_the_buffer_is_bounded_and_kept_while_the_queue_is_down(
    queue: SqliteQueue, tasks: list[asyncio.Task[Any]]
) -> None:
    lease, ids = await claimed(queue, 6)
    assert await queue.mark_committing(lease, ids) == set(ids)
    gated = Gated(queue)
    gated.fail = ConnectionError("database unreachable")
    writer = OutcomeWriter(gated, lease, interval=0.01, max_buffer=5)  # type: ignore[arg-type]
    tasks.append(asyncio.create_task(writer.run()))
    for i in ids[:4]:
        writer.add(delivered(i))
    assert not writer.full
    writer.add(delivered(ids[4]))
    assert writer.full  # at its bound: the engine stops claiming
    await asyncio.wait_for(gated.entered.wait(), 5)
    assert not await writer.drain(within=0.2)
    assert writer.pending == 5 and writer.failures >= 1 and writer.written == 0
    gated.fail = None  # the queue is back
    assert await writer.drain(within=10)
    assert not writer.full and writer.pending == 0
    assert await states(queue, ids[:5]) == [MessageState.DELIVERED] * 5


async def test_a_write_on_its_way_survives_the_cancellation_of_its_writer(
    queue: SqliteQueue,
) -> None:
    lease, ids = await claimed(queue, 3)
    assert await queue.mark_committing(lease, ids) == set(ids)
    gated = Gated(queue)
    gated.gate.clear()
    writer = OutcomeWriter(gated, lease, interval=0.01)  # type: ignore[arg-type]
    for i in ids:
        writer.add(delivered(i))
    run = asyncio.create_task(writer.run())
    await asyncio.wait_for(gated.entered.wait(), 5)  # the write is on its way
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    assert run.cancelled()
    assert await states(queue, ids) == [MessageState.COMMITTING] * 3
    gated.gate.set()  # the database answers after the writer was cancelled
    await asyncio.wait_for(gated.written.wait(), 5)
    assert await states(queue, ids) == [MessageState.DELIVERED] * 3
