"""Group commit: the `committing` marks and the outcomes of all sessions, written in batches.

Every SMTP session asks for its mark once its body is written up to the final dot, and waits
for it before writing the dot. A true group commit keeps that wait short: a request finding
the writer idle is written at once (after the current loop turn, so requests of the same turn
share it); requests arriving while a write is in flight are gathered and go out in one write
the moment it returns. Outcomes are buffered and written in batches too, shielded from
cancellation, and kept (bounded) while the queue is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable

from dispatcher.engine.stop_points import reached
from dispatcher.smtp.reply import escape_for_log
from queues.protocol import Event, Lease, MessageState, OutcomeRecord, Queue

log = logging.getLogger(__name__)


class MarkWriter:
    """Collects mark requests and grants them with one compare-and-set write per batch.

    `interval`: an optional wait before a write that starts from idle, to gather more marks
    (0, the default: write at once; a busy writer gathers by itself).
    """

    def __init__(self, queue: Queue, lease: Lease, interval: float = 0.0) -> None:
        self._queue = queue
        self._lease = lease
        self._interval = interval
        self._pending: dict[str, asyncio.Future[bool]] = {}
        # The batch whose write is on its way, with that write (shielded: it may outlive run()).
        self._writing: dict[str, asyncio.Future[bool]] = {}
        self._write: asyncio.Future[set[str]] | None = None
        self._stopped = False
        self._wake = asyncio.Event()
        self.batches = 0
        self.marks = 0
        self.in_flight = False

    def request(self, message_id: str) -> asyncio.Future[bool]:
        """A future resolving True once the mark is durable, False if it was refused."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._stopped:  # nothing will write it: refused, the dot is never written
            fut.set_result(False)
            return fut
        self._pending[message_id] = fut
        if not self.in_flight:
            self._wake.set()
        return fut

    async def run(self) -> None:
        """Flush loop; runs until cancelled, then refuses whatever is still waiting."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._interval > 0:
                    await asyncio.sleep(self._interval)
                # Whatever arrived during a write goes out as soon as it returns.
                while self._pending:
                    await self._flush()
        finally:
            self._stopped = True
            self._resolve_in_flight()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_result(False)
            self._pending.clear()

    def _resolve_in_flight(self) -> None:
        """Stopped during a write: its batch gets the write's result if it has one already,
        False otherwise. A session must not wait on a write it cannot see finish, and must
        never write a dot for a mark not granted; marks made durable later are left in
        `committing` for recovery to hold as ambiguous."""
        batch, write = self._writing, self._write
        self._writing, self._write = {}, None
        if not batch:
            return
        granted: set[str] = set()
        if write is not None and write.done() and not write.cancelled():
            if write.exception() is None:
                granted = write.result()
        elif write is not None:
            write.add_done_callback(_consume_result)
            log.warning("mark writer stopped during a write: %d sessions will not send", len(batch))
        for msg_id, fut in batch.items():
            if not fut.done():
                fut.set_result(msg_id in granted)

    async def _flush(self) -> None:
        batch = {k: f for k, f in self._pending.items() if not f.done()}
        self._pending = {}
        if not batch:
            return
        self.in_flight = True
        write = asyncio.ensure_future(self._queue.mark_committing(self._lease, list(batch)))
        self._writing, self._write = batch, write
        try:
            granted = await asyncio.shield(write)
        except asyncio.CancelledError:
            raise  # run()'s finally resolves the batch from `_writing`
        except Exception as e:  # the queue is unreachable: refuse, the dot is never written
            log.warning("committing marks failed (%s): %d sessions will not send", e, len(batch))
            granted = set()
        finally:
            self.in_flight = False
        self._writing, self._write = {}, None
        self.batches += 1
        self.marks += len(granted)
        if granted:
            reached("after_mark")
        for msg_id, fut in batch.items():
            if not fut.done():
                fut.set_result(msg_id in granted)


def _consume_result(write: asyncio.Future[set[str]]) -> None:
    """Retrieve the outcome of a write nobody awaits any more (no 'never retrieved' noise)."""
    if not write.cancelled() and write.exception() is not None:
        log.warning("committing marks of a stopped writer failed (%s)", write.exception())


_DATA_ERRORS = (ValueError, TypeError)  # the records, not the queue: splitting helps
_WAITING = frozenset({MessageState.QUEUED, MessageState.DEFERRED})


class OutcomeWriter:
    """Buffers outcome records and applies them in batches under the worker's lease.

    A batch the queue refuses for its data (a ValueError such as InvalidQueueInput) is split
    and written in halves down to single records; a record that still fails is written as a
    placeholder (its state kept, its texts replaced) and counted in `placeholders`, so no
    record can block the others. Any other error (the queue unreachable) keeps the batch
    for the next flush.

    Events (pauses, slows, reloads: `add_event`) ride with the next batch, in its
    transaction; the backend adds each applied outcome's own event there too.
    """

    def __init__(
        self,
        queue: Queue,
        lease: Lease,
        interval: float = 0.02,
        batch_size: int = 1000,
        max_buffer: int = 200_000,
        on_applied: Callable[[list[OutcomeRecord]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = queue
        self._lease = lease
        self._interval = interval
        self._batch_size = batch_size
        self._max_buffer = max_buffer
        self._buffer: list[OutcomeRecord] = []
        self._events: list[Event] = []
        self._added: deque[tuple[float, int]] = deque()  # (time, records added) runs
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._on_applied = on_applied
        self._clock = clock
        self._lock = asyncio.Lock()  # one writer at a time: run() and drain() share the buffer
        self.batches = 0
        self.written = 0
        self.failures = 0
        self.placeholders = 0  # records written with a placeholder for their texts
        self.dropped = 0  # records not even a placeholder of could be written (logged)

    @property
    def pending(self) -> int:
        return len(self._buffer) + len(self._events)

    @property
    def full(self) -> bool:
        """True when the buffer is at its bound: the engine stops claiming."""
        return len(self._buffer) >= self._max_buffer

    def age(self) -> float:
        """Seconds the oldest unwritten outcome has waited (0 when none waits)."""
        if not self._added:
            return 0.0
        return max(0.0, self._clock() - self._added[0][0])

    def add(self, record: OutcomeRecord) -> None:
        self._buffer.append(record)
        now = self._clock()
        added = self._added
        # Runs of records added within 10 ms share one entry: cheap per record.
        if added and now - added[-1][0] < 0.01:
            t, n = added[-1]
            added[-1] = (t, n + 1)
        else:
            added.append((now, 1))
        self._idle.clear()
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    def add_event(self, event: Event) -> None:
        """Write `event` with the next batch (alone when no outcome follows within the
        interval). Bounded: past `max_buffer` the oldest is dropped, with a warning."""
        if len(self._events) >= self._max_buffer:
            del self._events[0]
            log.warning("event buffer full: the oldest event was dropped")
        self._events.append(event)
        self._idle.clear()

    async def run(self) -> None:
        """Flush loop; runs until cancelled."""
        backoff = self._interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            ok = await self._flush_once()
            if ok:
                backoff = self._interval
            else:
                backoff = min(backoff * 2 if backoff else 0.05, 5.0)
                await asyncio.sleep(backoff)

    async def _flush_once(self) -> bool:
        async with self._lock:
            return await self._flush_locked()

    async def _flush_locked(self) -> bool:
        while self._buffer or self._events:
            batch = self._buffer[: self._batch_size]
            events = self._events[: self._batch_size]
            reached("before_outcome_write")
            try:
                await self._write(batch, events)
            except asyncio.CancelledError:
                raise
            except _DATA_ERRORS as e:
                log.warning(
                    "outcome batch of %d refused for its data (%s): split",
                    len(batch),
                    escape_for_log(str(e)),
                )
                if not await self._write_apart(batch):
                    return False
                if events and not await self._write_events_alone(events):
                    return False
                continue
            except Exception as e:
                self._failed(e)
                return False
            del self._events[: len(events)]
            self._written(batch, len(batch))
        self._idle.set()
        return True

    async def _write(self, records: list[OutcomeRecord], events: list[Event] | None = None) -> None:
        # Shielded: a cancelled engine must not lose a write already on its way.
        if events:
            await asyncio.shield(self._queue.record_outcomes(self._lease, records, events))
        else:
            await asyncio.shield(self._queue.record_outcomes(self._lease, records))

    async def _write_events_alone(self, events: list[Event]) -> bool:
        """The events of a batch refused for its data; dropped (logged) if they are the
        cause. False when the queue became unreachable."""
        try:
            await self._write([], events)
        except asyncio.CancelledError:
            raise
        except _DATA_ERRORS as e:
            log.error(
                "%d events dropped: the queue refused them (%s)",
                len(events),
                escape_for_log(str(e)),
            )
        except Exception as e:
            self._failed(e)
            return False
        del self._events[: len(events)]
        return True

    async def _write_apart(self, batch: list[OutcomeRecord]) -> bool:
        """Write `batch` (the buffer's head) in halves, in order; False when the queue
        became unreachable meanwhile (what was written is off the buffer)."""
        parts = [batch]
        while parts:
            part = parts.pop()
            try:
                await self._write(part)
            except asyncio.CancelledError:
                raise
            except _DATA_ERRORS as e:
                if len(part) > 1:
                    mid = len(part) // 2
                    parts += (part[mid:], part[:mid])  # the first half is written first
                    continue
                if not await self._write_placeholder(part[0], e):
                    return False
                continue
            except Exception as e:
                self._failed(e)
                return False
            self._written(part, len(part))
        return True

    async def _write_placeholder(self, record: OutcomeRecord, error: Exception) -> bool:
        """One record the queue refuses: its state with a placeholder text instead."""
        reason = type(error).__name__
        stand_in = placeholder(record, reason)
        event = Event(
            "outcome.placeholder",
            time.time(),
            {"state": str(record.state), "reason": f"the queue refused the outcome ({reason})"},
            message_id=record.id,
        )
        try:
            await self._write([stand_in], [event])
        except asyncio.CancelledError:
            raise
        except _DATA_ERRORS as e:
            # Not even the placeholder: drop it so the others go on; the message stays
            # under this lease until recovery settles it (ambiguous if it was committing).
            self.dropped += 1
            log.error(
                "outcome of %s dropped: the queue refused it (%s)",
                record.id,
                escape_for_log(str(e)),
            )
            self._written([], 1)
            return True
        except Exception as e:
            self._failed(e)
            return False
        self.placeholders += 1
        log.warning(
            "outcome of %s written with a placeholder text: the queue refused it (%s)",
            record.id,
            escape_for_log(str(error)),
        )
        self._written([stand_in], 1)
        return True

    def _written(self, records: list[OutcomeRecord], n: int) -> None:
        """The first `n` records of the buffer are settled; `records` were written."""
        del self._buffer[:n]
        added = self._added
        while n and added:
            t, k = added[0]
            if k <= n:
                added.popleft()
                n -= k
            else:
                added[0] = (t, k - n)
                n = 0
        self.batches += 1
        self.written += len(records)
        if records and self._on_applied is not None:
            self._on_applied(records)

    def _failed(self, e: Exception) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 100 == 0:
            log.warning("outcome write failed (%s); %d buffered", e, len(self._buffer))

    async def drain(self, within: float) -> bool:
        """Write everything buffered; True when the buffer is empty within `within` seconds."""
        try:
            async with asyncio.timeout(within):
                while self._buffer or self._events:
                    if not await self._flush_once():
                        await asyncio.sleep(0.1)
        except TimeoutError:
            return False
        return True


def placeholder(record: OutcomeRecord, reason: str) -> OutcomeRecord:
    """`record` with only what any backend can store: its id, state and attempt; a
    placeholder text; a retry time when its state needs one."""
    code = record.reply_code
    retry_at = record.retry_at
    if record.state in _WAITING and (
        not isinstance(retry_at, int | float) or not math.isfinite(retry_at)
    ):
        retry_at = time.time() + 60.0
    return OutcomeRecord(
        record.id,
        record.state,
        counts_attempt=bool(record.counts_attempt),
        retry_at=retry_at,
        reply_code=code if type(code) is int and 0 <= code <= 999 else None,
        reply_text=f"[outcome text not storable: {reason}]",
    )
