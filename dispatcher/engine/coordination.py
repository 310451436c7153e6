"""The engine's deliverability counters, chosen by `[coordination]`.

- no `redis`: `LocalCounters` in this process, with `share` = 1/N of every limit (N: the
  live workers in the store's registry at start; said in the log), so N processes together
  stay under each cap and rate; one process alone counts exactly;
- `redis`: `RedisCounters`, shared by every process and node; while Redis does not answer,
  `on_unavailable = "wait"` sends nothing that needs a shared count, `"local"` counts here at
  1/N of what was left (`FallbackCounters`), N refreshed from the registry.

Admission takes `counters` and `share` from here. `readiness()` feeds `/readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from dispatcher.config import Config, OnUnavailable
from ip_pools.counters import Counters, LocalCounters, pause_key
from ip_pools.redis_counters.counters import RedisCounters
from ip_pools.redis_counters.fallback import FallbackCounters
from ip_pools.redis_counters.keyspace import Keyspace
from queues.protocol import Queue

log = logging.getLogger("maildispatch.coordination")


@runtime_checkable
class _DailyCounts(Protocol):
    async def daily_counts(self, day: int) -> dict[tuple[str, str], int]: ...


class QueueRebuildSource:
    """What a Redis rebuild reads from the store: the daily counts per (IP, provider) of
    the attempt log, the live workers, and the pauses still in force (those of this
    process's automation; the store keeps no pause history yet)."""

    def __init__(self, queue: Queue, pauses: PausesKnown | None = None) -> None:
        self.queue = queue
        self._pauses = pauses
        self._warned = False

    async def daily_counts(self, day: int) -> Mapping[tuple[str, str], int]:
        if isinstance(self.queue, _DailyCounts):
            return await self.queue.daily_counts(day)
        if not self._warned:
            log.warning("the store keeps no daily counts: a rebuild starts today's counts at 0")
            self._warned = True
        return {}

    async def pauses(self, now: float) -> Sequence[tuple[str, str, float]]:
        return self._pauses.pauses_in_force(now) if self._pauses is not None else ()

    async def live_workers(self) -> int | None:
        return await self.queue.live_workers(time.time())


class PausesKnown(Protocol):
    def pauses_in_force(self, now: float) -> Sequence[tuple[str, str, float]]: ...


@dataclass
class Coordination:
    """The counters admission uses, the share of each limit it may use, and their health."""

    counters: Counters
    share: float = 1.0
    redis: RedisCounters | None = None
    fallback: FallbackCounters | None = None
    workers: int = 1
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def readiness(self) -> str:
        """"ok", or why shared counts cannot be decided ("unavailable", "rebuilding")."""
        if self.redis is None:
            return "ok"
        state = self.redis.state
        if state != "ready" and self.fallback is not None:
            return "ok"  # counting locally at this process's share meanwhile
        return "ok" if state == "ready" else state

    def paused_until(self, ip: str, provider: str, now: float) -> float:
        """The end of a pause another process raised for (ip, provider), as last heard."""
        if self.redis is None:
            return 0.0
        return self.redis.known_pause([pause_key(ip), pause_key(ip, provider)], now)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.redis is not None:
            await self.redis.close()


async def open_coordination(
    config: Config,
    queue: Queue,
    worker_id: str,
    known_ips: Collection[str],
    pauses: PausesKnown | None = None,
) -> Coordination:
    """The counters for this worker (registered already: it counts itself among the live)."""
    c = config.coordination
    workers = max(1, await queue.live_workers(time.time()))
    if not c.shared:
        if workers > 1:
            log.info(
                "counters in each process: limits divided by %d live workers "
                "(set [coordination] redis to share them exactly)",
                workers,
            )
        return Coordination(LocalCounters(), 1.0 / workers, workers=workers)
    redis = RedisCounters(
        c.redis,
        worker_id=worker_id,
        keyspace=Keyspace(c.key_prefix),
        source=QueueRebuildSource(queue, pauses),
        known_ips=known_ips,
        window=c.token_window,
        timeout=c.timeout,
        ack_window=c.rebuild_wait,
    )
    await redis.start(wait=c.timeout + c.rebuild_wait + 1.0)
    log.info(
        "counters shared in redis %s (%s); on_unavailable=%s",
        c.redacted_url(),
        redis.state,
        c.on_unavailable.value,
    )
    coord = Coordination(redis, 1.0, redis, workers=workers)
    if c.on_unavailable == OnUnavailable.LOCAL:
        coord.fallback = FallbackCounters(redis, lambda: 1.0 / max(1, coord.workers))
        coord.counters = coord.fallback
        coord.tasks.append(
            asyncio.create_task(_refresh_workers(coord, queue), name="coordination-workers")
        )
    return coord


async def _refresh_workers(coord: Coordination, queue: Queue, every: float = 10.0) -> None:
    """Keep N (the live workers) current for the local fallback's share."""
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):  # the store's own troubles are reported elsewhere
            coord.workers = max(1, await queue.live_workers(time.time()))
