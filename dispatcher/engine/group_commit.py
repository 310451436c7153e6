"""Group commit: the `committing` marks and the outcomes of all sessions, written in batches.

Every SMTP session asks for its mark when it sends MAIL and awaits it just before DATA; the
marks gathered in a few milliseconds go to the queue in one write, so their latency hides
behind the SMTP round trips. Outcomes are buffered and written in batches too, shielded from
cancellation, and kept (bounded) while the queue is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from dispatcher.engine.stop_points import reached
from queues.protocol import Lease, OutcomeRecord, Queue

log = logging.getLogger(__name__)


class MarkWriter:
    """Collects mark requests and grants them with one compare-and-set write per batch."""

    def __init__(self, queue: Queue, lease: Lease, interval: float = 0.002) -> None:
        self._queue = queue
        self._lease = lease
        self._interval = interval
        self._pending: dict[str, asyncio.Future[bool]] = {}
        self._wake = asyncio.Event()
        self.batches = 0
        self.marks = 0

    def request(self, message_id: str) -> asyncio.Future[bool]:
        """A future resolving True once the mark is durable, False if it was refused."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = fut
        self._wake.set()
        return fut

    async def run(self) -> None:
        """Flush loop; runs until cancelled, then refuses whatever is still waiting."""
        try:
            while True:
                await self._wake.wait()
                # Wait a little so that marks of other sessions join this write.
                await asyncio.sleep(self._interval)
                self._wake.clear()
                await self._flush()
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_result(False)
            self._pending.clear()

    async def _flush(self) -> None:
        batch = {k: f for k, f in self._pending.items() if not f.done()}
        self._pending = {}
        if not batch:
            return
        try:
            granted = await asyncio.shield(self._queue.mark_committing(self._lease, list(batch)))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the queue is unreachable: refuse, the dot is never written
            log.warning("committing marks failed (%s): %d sessions will not send", e, len(batch))
            granted = set()
        self.batches += 1
        self.marks += len(granted)
        if granted:
            reached("after_mark")
        for msg_id, fut in batch.items():
            if not fut.done():
                fut.set_result(msg_id in granted)


class OutcomeWriter:
    """Buffers outcome records and applies them in batches under the worker's lease."""

    def __init__(
        self,
        queue: Queue,
        lease: Lease,
        interval: float = 0.02,
        batch_size: int = 1000,
        max_buffer: int = 200_000,
        on_applied: Callable[[list[OutcomeRecord]], None] | None = None,
    ) -> None:
        self._queue = queue
        self._lease = lease
        self._interval = interval
        self._batch_size = batch_size
        self._max_buffer = max_buffer
        self._buffer: list[OutcomeRecord] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._on_applied = on_applied
        self._lock = asyncio.Lock()  # one writer at a time: run() and drain() share the buffer
        self.batches = 0
        self.written = 0
        self.failures = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def full(self) -> bool:
        """True when the buffer is at its bound: the engine stops claiming."""
        return len(self._buffer) >= self._max_buffer

    def add(self, record: OutcomeRecord) -> None:
        self._buffer.append(record)
        self._idle.clear()
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

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
        while self._buffer:
            batch = self._buffer[: self._batch_size]
            reached("before_outcome_write")
            try:
                # Shielded: a cancelled engine must not lose a write already on its way.
                await asyncio.shield(self._queue.record_outcomes(self._lease, batch))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("outcome write failed (%s); %d buffered", e, len(self._buffer))
                return False
            del self._buffer[: len(batch)]
            self.batches += 1
            self.written += len(batch)
            if self._on_applied is not None:
                self._on_applied(batch)
        self._idle.set()
        return True

    async def drain(self, within: float) -> bool:
        """Write everything buffered; True when the buffer is empty within `within` seconds."""
        try:
            async with asyncio.timeout(within):
                while self._buffer:
                    if not await self._flush_once():
                        await asyncio.sleep(0.1)
        except TimeoutError:
            return False
        return True
