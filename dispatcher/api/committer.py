"""Group commit for single-message requests: every request waiting while a write is in
flight goes into the next write, so concurrent requests share one transaction (on SQLite
with synchronous = FULL, one fsync) and no request waits for a timer.

A request is answered only after its write committed: 202 means durably stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from queues.errors import IdempotencyConflict
from queues.protocol import EnqueueResult, NewMessage, Queue

log = logging.getLogger(__name__)

Outcome = EnqueueResult | IdempotencyConflict


class EnqueueCommitter:
    """Collects messages from concurrent requests and stores them in batches."""

    def __init__(self, queue: Queue, max_batch: int = 1000, max_waiting: int = 20_000) -> None:
        self._queue = queue
        self._max_batch = max_batch
        self._max_waiting = max_waiting
        self._waiting: list[tuple[NewMessage, asyncio.Future[Outcome]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.writes = 0
        self.messages = 0

    @property
    def busy(self) -> bool:
        """True when the waiting line is full (the caller answers 503)."""
        return len(self._waiting) >= self._max_waiting

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="enqueue-committer")

    async def stop(self) -> None:
        """Write what is waiting (and the write in flight), then stop."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._task = None

    async def submit(self, message: NewMessage) -> Outcome:
        """Store `message` with the others of its batch; its result once committed."""
        if self._task is None or self._task.done() or self._stopping:
            raise ConnectionError("the enqueue writer is not running")
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((message, fut))
        self._wake.set()
        # A client that goes away does not cancel the write: the message may be stored, and
        # a retry with its Idempotency-Key gets the same answer.
        return await asyncio.shield(fut)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                await self._flush()
            if self._stopping:
                return

    async def _flush(self) -> None:
        batch = self._waiting[: self._max_batch]
        del self._waiting[: self._max_batch]
        try:
            results = await self._queue.enqueue_each([m for m, _ in batch])
        except Exception as e:  # the store failed: every request of the batch hears it
            log.warning("enqueue of %d messages failed: %s", len(batch), e)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        self.writes += 1
        self.messages += len(batch)
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)
