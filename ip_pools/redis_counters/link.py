"""One process's link to Redis: every call of a moment goes out in one pipeline.

Calls made while a pipeline is in flight wait for the next one, so under load many
decisions share a round trip (Nagle-like) and idle ones are sent at once. Calls marked
`lazy` (renewals, releases) ride with the next urgent call, or go alone by their deadline.
A Redis that does not answer fails every call of the pipeline with `CoordinationUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ip_pools.redis_counters.scripts import ALL, Script

log = logging.getLogger("maildispatch.coordination")


class CoordinationUnavailable(ConnectionError):
    """Redis did not answer; nothing that needs a shared count may go now."""

    code = "coordination_unavailable"
    field = "coordination.redis"


@dataclass(slots=True)
class _Call:
    script: Script | None
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    deadline: float = 0.0  # lazy calls: monotonic time by which it must go
    lazy: bool = False


@dataclass(slots=True)
class LinkStats:
    """Round trips and calls sent, for the benchmarks and metrics."""

    round_trips: int = 0
    calls: int = 0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)


class RedisLink:
    """Pipelined EVALSHA and commands over one redis-py asyncio client."""

    def __init__(self, url: str, *, timeout: float = 1.0, keep_latencies: bool = False) -> None:
        # No client-side retries: a failure must be seen at once (the caller waits, not us).
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self.url = url
        self.stats = LinkStats()
        self._keep_latencies = keep_latencies
        self._pending: list[_Call] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> asyncio.Task[None]:
        """Start the sender (a background task the owner watches)."""
        if self._task is None:
            self._task = asyncio.create_task(self._sender(), name="redis-link")
        return self._task

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for c in self._pending:
            if not c.future.done():
                c.future.set_exception(CoordinationUnavailable("link closed"))
        self._pending.clear()
        await self.redis.aclose()

    # -- calls -----------------------------------------------------------------------------

    def script(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Awaitable[Any]:
        """EVALSHA in the next pipeline."""
        return self._add(script, (len(keys), *keys, *args), lazy=False, within=0.0)

    def command(self, *args: Any) -> Awaitable[Any]:
        """A plain command in the next pipeline."""
        return self._add(None, args, lazy=False, within=0.0)

    def lazy(
        self, script: Script | None, args: Sequence[Any], within: float
    ) -> asyncio.Future[Any]:
        """A call that may wait up to `within` seconds for an urgent one to ride with."""
        return self._add(script, tuple(args), lazy=True, within=within)

    def _add(
        self, script: Script | None, args: tuple[Any, ...], *, lazy: bool, within: float
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_exception(CoordinationUnavailable("link closed"))
            return fut
        self._pending.append(_Call(script, args, fut, time.monotonic() + within, lazy))
        if not lazy or within <= 0:
            self._wake.set()
        elif self._task is not None:
            self._wake.set()  # the sender recomputes its next deadline
        return fut

    # -- the sender ------------------------------------------------------------------------

    async def _sender(self) -> None:
        while not self._closed:
            timeout = self._next_deadline()
            if timeout is None or timeout > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            if self._closed:
                return
            if not self._due():
                continue
            # Let the calls of this moment join (one loop turn), then send them all.
            await asyncio.sleep(0)
            batch, self._pending = self._pending, []
            await self._send(batch)

    def _next_deadline(self) -> float | None:
        if not self._pending:
            return None
        now = time.monotonic()
        return max(0.0, min(c.deadline for c in self._pending) - now)

    def _due(self) -> bool:
        now = time.monotonic()
        return any((not c.lazy) or c.deadline <= now for c in self._pending)

    async def _send(self, batch: list[_Call]) -> None:
        live = [c for c in batch if not c.future.cancelled()]
        if not live:
            return
        try:
            results = await self._pipeline(live)
            retry = [
                (i, c)
                for i, (c, r) in enumerate(zip(live, results, strict=True))
                if isinstance(r, NoScriptError)
            ]
            if retry:
                # Redis lost its scripts (restart, SCRIPT FLUSH): load them, send those again.
                async with self.redis.pipeline(transaction=False) as pipe:
                    for s in ALL:
                        pipe.script_load(s.source)
                    await pipe.execute()
                self.stats.round_trips += 1
                again = await self._pipeline([c for _, c in retry])
                for (i, _), r in zip(retry, again, strict=True):
                    results[i] = r
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            self.stats.failures += 1
            err = CoordinationUnavailable(f"redis unavailable: {type(e).__name__}")
            for c in live:
                if not c.future.done():
                    c.future.set_exception(err)
            return
        for c, r in zip(live, results, strict=True):
            if c.future.done():
                continue
            if isinstance(r, RedisError):
                c.future.set_exception(r)
            else:
                c.future.set_result(r)

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        started = time.perf_counter()
        async with self.redis.pipeline(transaction=False) as pipe:
            for c in calls:
                if c.script is not None:
                    pipe.execute_command("EVALSHA", c.script.sha, *c.args)
                else:
                    pipe.execute_command(*c.args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        self.stats.round_trips += 1
        self.stats.calls += len(calls)
        if self._keep_latencies:
            self.stats.latencies.append(time.perf_counter() - started)
        return results


async def subscribe(
    link: RedisLink,
    channel: str,
    on_message: Callable[[str], None],
    on_subscribed: Callable[[], None],
    on_unsubscribed: Callable[[], None],
    stop: asyncio.Event,
) -> None:
    """Listen on `channel` until `stop`, reconnecting with backoff. `on_subscribed` after
    each (re)subscription, `on_unsubscribed` when the connection is lost (messages may have
    been missed in between)."""
    delay = 0.05
    while not stop.is_set():
        pubsub = link.redis.pubsub()
        subscribed = False
        try:
            await pubsub.subscribe(channel)
            subscribed = True
            on_subscribed()
            delay = 0.05
            while not stop.is_set():
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if msg is not None and msg.get("type") == "message":
                    on_message(str(msg["data"]))
        except (RedisConnectionError, RedisTimeoutError, OSError):
            if subscribed:
                on_unsubscribed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 1.0)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
