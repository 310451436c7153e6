"""Wake-ups for idle workers: LISTEN on a dedicated connection that reconnects by itself.

Enqueue and recovery send one NOTIFY per statement on `CHANNEL`. A lost notification only
delays work until the caller's polling timeout; after every (re)connect the listener
reports a wake-up anyway, because notifications sent while it was away are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from queues.errors import QueueUnavailable
from queues.postgres.connection import translated_errors

CHANNEL = "maildispatch_work"
log = logging.getLogger(__name__)


class WorkListener:
    """Holds LISTEN open; `wait(timeout)` returns early when work was announced."""

    def __init__(
        self,
        dsn: str,
        *,
        connect_timeout: float = 5.0,
        ping_interval: float = 5.0,
        max_backoff: float = 2.0,
    ) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.connects = 0

    def start(self) -> None:
        """Start listening in the background (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="pg-work-listener")

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 (a poll period)
        """Sleep until work is announced or `timeout` seconds pass (the polling fallback)."""
        self.start()
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                conn = await self._connect()
            except QueueUnavailable as e:
                log.debug("work listener cannot connect (%s), retrying in %.2fs", e.code, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = 0.05
            try:
                await self._hold(conn)
            finally:
                self.connected.clear()
                conn.terminate()

    async def _connect(self) -> asyncpg.Connection:
        async with translated_errors():
            conn = await asyncpg.connect(
                self._dsn,
                timeout=self._connect_timeout,
                server_settings={"application_name": "maildispatch-listener"},
            )
            try:
                await conn.add_listener(CHANNEL, self._notified)
            except BaseException:
                conn.terminate()
                raise
        return conn

    async def _hold(self, conn: asyncpg.Connection) -> None:
        """Keep the connection until it breaks; a silent TCP death is caught by a ping."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        self.connects += 1
        self.connected.set()
        self._wake.set()  # whatever was announced while away is lost: look now
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._ping_interval)
            if lost.is_set():
                break
            try:
                await asyncio.wait_for(conn.execute("SELECT 1"), self._connect_timeout)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                break
        log.debug("work listener lost its connection; reconnecting")
