"""`on_unavailable = "local"`: while Redis does not answer, count in this process at its
share (1/N of N live workers) of what was left, and hand the counts to Redis when it is back.

Rates and connection limits are scaled by the share; a day count may grow by at most its
share of what was left under its cap when Redis was last heard (so the fleet together stays
under the cap whatever the others counted meanwhile). When Redis answers again, what was
counted here is added to the shared counts at once, and for `grace` seconds after, the
shares the other processes may still be handing over are held back from the caps. A process
cut off for longer than that can push a count over its cap by at most its own share.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence

from ip_pools.counters import LocalCounters, TokenGrant
from ip_pools.rates import Rate
from ip_pools.redis_counters.counters import RedisCounters
from ip_pools.redis_counters.link import CoordinationUnavailable

log = logging.getLogger("maildispatch.coordination")


class FallbackCounters:
    """`Counters` over `shared` (Redis), falling back to in-process counters at `share()`."""

    def __init__(
        self, shared: RedisCounters, share: Callable[[], float], *, grace: float = 5.0
    ) -> None:
        self.shared = shared
        self.share = share
        self.grace = grace
        self.local = LocalCounters()
        self._local_mode = False
        self._local_counts: dict[str, tuple[int, float]] = {}  # key -> (added here, expiry)
        self._base: dict[str, int] = {}  # key -> shared count when Redis was last heard
        self._caps: dict[str, int] = {}  # key -> cap seen while local
        self._reserve: dict[str, int] = {}  # key -> held back from the cap until _reserve_end
        self._reserve_end = 0.0
        self._handing: asyncio.Future[bool] | None = None
        self._handover_lock = asyncio.Lock()
        shared.on_ready.append(self._on_ready)

    def _on_ready(self) -> None:
        # Hand over at once, not at this process's next decision: others are deciding now.
        if self._local_mode and (self._handing is None or self._handing.done()):
            self._handing = asyncio.ensure_future(self._use_shared())

    @property
    def local_mode(self) -> bool:
        return self._local_mode

    async def _use_shared(self) -> bool:
        """True when Redis is ready (after handing it what was counted here)."""
        if self.shared.state != "ready":
            self._enter_local()
            return False
        if self._local_mode:
            async with self._handover_lock:  # one handover, however many callers wait
                if self._local_mode:
                    try:
                        await self._hand_over()
                    except CoordinationUnavailable:
                        return False
                    log.warning("redis answers again: shared counters resumed")
                    self._local_mode = False
        return True

    def _held_back(self, key: str, cap: int | None) -> int | None:
        """The cap less the shares other processes may still hand over (just after resuming)."""
        if cap is None or not self._reserve or time.monotonic() >= self._reserve_end:
            self._reserve.clear()
            return cap
        return max(0, cap - self._reserve.get(key, 0))

    def _enter_local(self) -> None:
        if not self._local_mode:
            self._local_mode = True
            self._base = self.shared.known_counts()
            log.warning(
                "redis unavailable: counting in this process at %.3g of the limits", self.share()
            )

    async def _hand_over(self) -> None:
        s = self.share()
        others = max(0, round(1 / s) - 1) if s > 0 else 0
        for key, cap in self._caps.items():
            left = max(0, cap - self._base.get(key, 0))
            self._reserve[key] = others * math.floor(left * s)
        self._reserve_end = time.monotonic() + self.grace
        self._caps.clear()
        while self._local_counts:
            key, (n, expires_at) = next(iter(self._local_counts.items()))
            if n > 0:
                await self.shared.add_count(key, n, None, expires_at)
            del self._local_counts[key]
        self.local = LocalCounters()

    def _rate(self, rate: Rate) -> Rate:
        s = self.share()
        return Rate(rate.count * s, rate.per, max(1, math.floor(rate.burst * s)))

    async def take_tokens(self, key: str, rate: Rate, want: int, now: float) -> TokenGrant:
        if await self._use_shared():
            try:
                return await self.shared.take_tokens(key, rate, want, now)
            except CoordinationUnavailable:
                self._enter_local()
        return await self.local.take_tokens(key, self._rate(rate), want, now)

    async def next_token(self, key: str, rate: Rate, now: float) -> float:
        if await self._use_shared():
            try:
                return await self.shared.next_token(key, rate, now)
            except CoordinationUnavailable:
                self._enter_local()
        return await self.local.next_token(key, self._rate(rate), now)

    async def add_count(self, key: str, n: int, cap: int | None, expires_at: float) -> int:
        if await self._use_shared():
            try:
                return await self.shared.add_count(key, n, self._held_back(key, cap), expires_at)
            except CoordinationUnavailable:
                self._enter_local()
        local_cap = None
        if cap is not None:
            self._caps[key] = cap
            left = max(0, cap - self._base.get(key, 0))
            local_cap = math.floor(left * self.share())
        added = await self.local.add_count(key, n, local_cap, expires_at)
        have, _ = self._local_counts.get(key, (0, 0.0))
        self._local_counts[key] = (have + added, expires_at)
        return added

    async def counts(self, keys: Sequence[str]) -> list[int]:
        if await self._use_shared():
            try:
                return await self.shared.counts(keys)
            except CoordinationUnavailable:
                self._enter_local()
        # What the fleet had, scaled to this process's share, plus what it counted since.
        here = await self.local.counts(keys)
        s = self.share()
        return [math.floor(self._base.get(k, 0) * s) + h for k, h in zip(keys, here, strict=True)]

    async def seed_counts(self, counts: Mapping[str, int], expires_at: float) -> None:
        if await self._use_shared():
            try:
                return await self.shared.seed_counts(counts, expires_at)
            except CoordinationUnavailable:
                self._enter_local()
        for key, value in counts.items():
            self._base[key] = max(self._base.get(key, 0), value)

    async def acquire_slot(self, key: str, limit: int, holder: str, ttl: float, now: float) -> bool:
        if await self._use_shared():
            try:
                return await self.shared.acquire_slot(key, limit, holder, ttl, now)
            except CoordinationUnavailable:
                self._enter_local()
        scaled = max(1, math.floor(limit * self.share()))
        return await self.local.acquire_slot(key, scaled, holder, ttl, now)

    async def release_slot(self, key: str, holder: str) -> None:
        await self.local.release_slot(key, holder)
        await self.shared.release_slot(key, holder)

    async def slots_held(self, key: str, now: float) -> int:
        if await self._use_shared():
            try:
                return await self.shared.slots_held(key, now)
            except CoordinationUnavailable:
                self._enter_local()
        return await self.local.slots_held(key, now)

    async def pause(self, key: str, until: float) -> None:
        await self.local.pause(key, until)
        if await self._use_shared():
            try:
                await self.shared.pause(key, until)
            except CoordinationUnavailable:
                self._enter_local()

    async def paused_until(self, keys: Sequence[str], now: float) -> float:
        here = await self.local.paused_until(keys, now)
        if await self._use_shared():
            try:
                return max(here, await self.shared.paused_until(keys, now))
            except CoordinationUnavailable:
                self._enter_local()
        return max(here, self.shared.known_pause(keys, now))
