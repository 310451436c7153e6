"""`RedisCounters`: the `Counters` interface held in Redis, shared by every process and node.

Each method is one script call (one round trip, coalesced with the other calls of the
moment by `RedisLink`), except what is read often and changes rarely: pauses are cached and
kept current by pub/sub (a pause raised anywhere reaches every process in one message; the
rate script also refuses tokens under a pause, so a missed message costs at most the tokens
admission already holds), and counts are cached for `count_fresh` seconds as a pre-check
(the add that spends is exact in Redis).

When Redis does not answer, or answers under another epoch (it restarted empty), every
method raises `CoordinationUnavailable` (`CountersRebuilding` for the latter): nothing that
needs a shared count is decided, and a background task resyncs. After an empty restart one
process rebuilds (see `rebuild`), the others join it, and all go on under the new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from ip_pools.counters import ANY_PROVIDER, TokenGrant
from ip_pools.rates import Rate
from ip_pools.redis_counters import scripts
from ip_pools.redis_counters.keyspace import Keyspace
from ip_pools.redis_counters.link import CoordinationUnavailable, RedisLink, subscribe
from ip_pools.warmup import DAY, utc_day

log = logging.getLogger("maildispatch.coordination")

_SITE = ":mx:"  # route keys of unlisted destinations are "mx:HOST" (ip_pools.providers)


class CountersRebuilding(CoordinationUnavailable):
    """Redis answers under another epoch (it lost its data): counts are being rebuilt."""

    code = "counters_rebuilding"


class RebuildSource(Protocol):
    """What a rebuild reads from the store (the engine passes its queue's view)."""

    async def daily_counts(self, day: int) -> Mapping[tuple[str, str], int]:
        """What each (source IP, provider) was counted for on UTC day `day`."""

    async def pauses(self, now: float) -> Sequence[tuple[str, str, float]]:
        """(IP, route or "*", end) of every pause whose end is after `now`."""

    async def live_workers(self) -> int | None:
        """How many workers are alive (the rebuild stops waiting once as many joined);
        None when unknown (it waits its whole window)."""


class NoSource:
    """A rebuild source that knows nothing (tests, `maildispatch pools`)."""

    async def daily_counts(self, day: int) -> Mapping[tuple[str, str], int]:
        return {}

    async def pauses(self, now: float) -> Sequence[tuple[str, str, float]]:
        return ()

    async def live_workers(self) -> int | None:
        return None


def split_ip_route(rest: str) -> tuple[str, str]:
    """ "IP:ROUTE" -> (IP, ROUTE); IPv6 addresses and "mx:HOST" routes hold colons."""
    i = rest.rfind(_SITE)
    if i >= 0:
        return rest[:i], rest[i + 1 :]
    ip, _, route = rest.rpartition(":")
    if not ip:
        raise ValueError(f"not a counters key: {rest!r}")
    return ip, route


def parse_key(key: str) -> tuple[str, int, str, str]:
    """A key of `ip_pools.counters` -> (kind, day or -1, ip, route)."""
    kind, _, rest = key.partition(":")
    day = -1
    if kind == "day":
        d, _, rest = rest.partition(":")
        day = int(d)
    elif kind not in ("rate", "conn", "pause"):
        raise ValueError(f"not a counters key: {key!r}")
    ip, route = split_ip_route(rest)
    return kind, day, ip, route


@dataclass(frozen=True, slots=True)
class _Grant:
    granted: int
    retry_at: float
    paused: bool = False


@dataclass(slots=True)
class _Stock:
    """Rate tokens this process holds for one key, until `until` (monotonic)."""

    rate: Rate
    tokens: int = 0
    until: float = 0.0
    asked: float = 0.0  # monotonic time of the last ask
    retry_at: float = 0.0  # no batch conforms before (POSIX time), from the last refusal
    paused_until: float = 0.0  # POSIX time
    due: float = 0.0  # monotonic time a refill is due (0: none)


@dataclass(slots=True)
class _Count:
    value: int
    at: float  # monotonic time it was learnt


class RedisCounters:
    """`ip_pools.counters.Counters` in Redis. `start()` before use, `close()` after."""

    def __init__(
        self,
        url: str,
        *,
        worker_id: str,
        keyspace: Keyspace | None = None,
        source: RebuildSource | None = None,
        known_ips: Collection[str] = (),
        window: float = 0.15,
        least: float = 1.0,
        hold: float = 1.0,
        slot: float = 0.02,
        tick: float = 0.5,
        timeout: float = 1.0,
        ack_window: float = 3.0,
        count_fresh: float = 1.0,
        keep_latencies: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.link = RedisLink(url, timeout=timeout, keep_latencies=keep_latencies)
        self.keys = keyspace or Keyspace()
        self.worker_id = worker_id
        self.source: RebuildSource = source or NoSource()
        self.known_ips = set(known_ips)
        self.window_us = int(window * 1e6)
        self.least = least  # a refill grants at least this share of its batch, or none
        self.hold = hold  # tokens unspent this long after their take lapse
        self.tick = tick  # stocks asked for are topped up at least this often
        self.slot = slot  # refills due within one slot share a round trip
        self._phase = time.monotonic() % slot
        self._schedule = asyncio.Event()
        self._round: asyncio.Future[None] | None = None
        self._stock: dict[str, _Stock] = {}
        self.ack_window = ack_window
        self.count_fresh = count_fresh
        self.clock = clock
        self.epoch: str | None = None
        self.available = False
        self.ready = False
        self.rebuilds = 0  # full rebuilds this process made
        self._closed = False
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._resync: asyncio.Task[None] | None = None
        self._down_logged = False
        self._pauses: dict[str, dict[str, float]] = {}
        self._pauses_at: dict[str, float] = {}
        self._pubsub_up = False
        self._counts: dict[str, _Count] = {}
        self._unrecorded: dict[tuple[int, str, str], int] = {}
        self._noticed: dict[tuple[int, str, str], int] | None = None
        self._acked: set[str] = set()
        self._missing: set[str] = set()
        self._first: dict[str, asyncio.Future[bool]] = {}
        self._ready_event = asyncio.Event()
        self.on_ready: list[Callable[[], None]] = []  # called each time it becomes ready
        # called with (ip, route, until) for every pause raised by any process (this one too)
        self.on_pause: list[Callable[[str, str, float], None]] = []

    # -- lifetime --------------------------------------------------------------------------

    async def start(self, *, wait: float = 0.0) -> None:
        """Start the link and the listener and sync the epoch (rebuilding when Redis is
        empty); waits up to `wait` seconds for it to be ready (it goes on in the background)."""
        self._tasks.append(self.link.start())
        self._tasks.append(
            asyncio.create_task(self._scheduler(), name="redis-counters-refills")
        )
        self._tasks.append(
            asyncio.create_task(
                subscribe(
                    self.link,
                    self.keys.channel,
                    self._on_message,
                    self._on_subscribed,
                    self._on_unsubscribed,
                    self._stop,
                ),
                name="redis-counters-listener",
            )
        )
        self._kick()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready_event.wait(), wait)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """Background tasks for the owner to watch (one ending early is a failure)."""
        return list(self._tasks)

    async def close(self) -> None:
        self._closed = True
        self._stop.set()
        tasks = [t for t in (*self._tasks[1:], self._resync) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.link.close()

    @property
    def state(self) -> str:
        """"ready", "unavailable" (Redis does not answer) or "rebuilding"."""
        if self.ready and self.available:
            return "ready"
        return "unavailable" if not self.available else "rebuilding"

    async def wait_ready(self, within: float) -> bool:
        """Wait up to `within` seconds for the counters to be ready; whether they are."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready_event.wait(), within)
        return self.ready

    # -- the Counters interface ------------------------------------------------------------

    async def take_tokens(self, key: str, rate: Rate, want: int, now: float) -> TokenGrant:
        """Tokens from this process's stock. A key whose stock ran out is refilled when its
        next batch conforms (GCRA says when); refills due in the same `slot` go out in one
        round trip, and every other key asked for lately whose stock is under half a batch
        rides along in it."""
        want = max(0, want)
        mono = time.monotonic()
        st = self._stock.get(key)
        if st is None:
            st = self._stock[key] = _Stock(rate)
        st.rate, st.asked = rate, mono
        for _ in range(3):
            if st.tokens > 0 and st.until > mono:
                n = min(want, st.tokens)
                st.tokens -= n
                return TokenGrant(n, now)
            if st.paused_until > now:
                return TokenGrant(0, st.paused_until)
            self._check()
            at = mono + max(0.0, st.retry_at - now)  # when the next batch conforms
            if st.due <= 0 or at < st.due:
                st.due = at
            self._schedule.set()
            if st.due > mono + self.slot:
                return TokenGrant(0, now + (st.due - mono) + self.slot)
            await asyncio.shield(self._next_round())
            mono, now = time.monotonic(), self.clock()
        return TokenGrant(0, now + self.slot)

    def _next_round(self) -> asyncio.Future[None]:
        if self._round is None or self._round.done():
            self._round = asyncio.get_running_loop().create_future()
        return self._round

    async def _scheduler(self) -> None:
        """Send refills: every `tick` while keys are asked for (each topped up to a batch,
        all in one round trip), and in between the ones due when a stock ran out (rounded up
        to the `slot` grid, so refills due together share a round trip). Nothing when idle."""
        next_tick = time.monotonic() + self.tick
        while not self._closed:
            mono = time.monotonic()
            dues = [st.due for st in self._stock.values() if st.due > 0]
            active = any(st.asked > mono - self.hold for st in self._stock.values())
            if not dues and not active:
                self._schedule.clear()
                await self._schedule.wait()
                next_tick = time.monotonic() + self.tick
                continue
            at = next_tick if active else float("inf")
            if dues:
                first = min(dues)
                at = min(at, first + (-(first - self._phase) % self.slot))
            if at > mono:
                self._schedule.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._schedule.wait(), at - mono)
                if time.monotonic() < at:
                    continue  # something new: recompute
            ticking = time.monotonic() >= next_tick
            if ticking:
                next_tick = time.monotonic() + self.tick
            round_ = self._next_round()
            try:
                await self._refill_round(self.clock(), ticking)
            except (CoordinationUnavailable, RedisError):
                pass  # the state says so; the decisions waiting see it
            finally:
                if not round_.done():
                    round_.set_result(None)

    async def _refill_round(self, now: float, ticking: bool) -> None:
        mono = time.monotonic()
        calls = []
        for key, st in self._stock.items():
            batch = self._batch(st.rate)
            held = st.tokens if st.until > mono else 0
            if st.due > 0 and st.due <= mono + self.slot:
                st.due = 0.0
                calls.append(self._top_up(key, now, batch - held, self.least))
            elif (
                st.asked > mono - self.hold
                and st.paused_until <= now
                and held < batch
                and (ticking or held * 2 < batch)
            ):
                calls.append(self._top_up(key, now, batch - held, 0.0 if ticking else 0.5))
        if calls:
            await asyncio.gather(*calls)

    async def _top_up(self, key: str, now: float, want: int, least: float) -> None:
        st = self._stock[key]
        _, _, ip, route = parse_key(key)
        sent = time.monotonic()
        epoch = self.epoch
        grant = await self._rate(ip, route, st.rate, want, now, least)
        if grant.paused:
            st.paused_until = grant.retry_at
        if grant.granted and epoch == self.epoch:
            # Unspent tokens lapse with their lease, never given back.
            st.tokens = (st.tokens if st.until > time.monotonic() else 0) + grant.granted
            st.until = sent + self.hold
        st.retry_at = grant.retry_at  # when the next batch conforms

    def _batch(self, rate: Rate) -> int:
        """At most `window` of the rate and the burst; at least one token."""
        return max(1, min(rate.burst, math.floor(self.window_us / 1e6 / rate.interval)))

    def _drop_stock(self, ip: str | None = None, route: str | None = None) -> None:
        """Forget held tokens (a pause, an epoch change): they must not be spent."""
        for key, st in self._stock.items():
            if ip is None:
                st.tokens = 0
                continue
            _, _, k_ip, k_route = parse_key(key)
            if k_ip == ip and (route in (None, ANY_PROVIDER) or k_route == route):
                st.tokens = 0

    async def next_token(self, key: str, rate: Rate, now: float) -> float:
        st = self._stock.get(key)
        if st is not None and st.tokens > 0 and st.until > time.monotonic():
            return now
        if st is not None and st.retry_at > now:
            return st.retry_at
        _, _, ip, route = parse_key(key)
        grant = await self._rate(ip, route, rate, 0, now, 0.0)
        return max(now, grant.retry_at)

    async def _rate(
        self, ip: str, route: str, rate: Rate, want: int, now: float, least: float
    ) -> _Grant:
        code, granted, wait, _ = await self._script(
            ip,
            scripts.RATE,
            [self.keys.rate(ip, route), self.keys.pauses(ip)],
            [route, want, rate.interval * 1e6, rate.burst, self.window_us, least],
        )
        if code == -2:
            until = int(wait) / 1e6
            self._set_pause(ip, route, until)
            return _Grant(0, until, paused=True)
        return _Grant(int(granted), now + int(wait) / 1e6)

    async def add_count(self, key: str, n: int, cap: int | None, expires_at: float) -> int:
        _, day, ip, route = parse_key(key)
        if n == 0:
            return 0
        _, added, count = await self._script(
            ip,
            scripts.COUNT,
            [self.keys.day(ip, day)],
            [route, n, -1 if cap is None else cap, int(expires_at)],
        )
        added = int(added)
        self._counts[key] = _Count(int(count), time.monotonic())
        if route != ANY_PROVIDER and added:
            k = (day, ip, route)
            left = self._unrecorded.get(k, 0) + added
            if left > 0:
                self._unrecorded[k] = left
            else:
                self._unrecorded.pop(k, None)
        return added

    async def counts(self, keys: Sequence[str]) -> list[int]:
        fresh = time.monotonic() - self.count_fresh
        stale: dict[tuple[str, int], list[str]] = {}
        found: dict[str, int] = {}
        for key in keys:
            c = self._counts.get(key)
            if c is None or c.at < fresh:
                _, day, ip, _route = parse_key(key)
                stale.setdefault((ip, day), []).append(key)
            else:
                found[key] = c.value
        if stale:
            self._check()
            groups = list(stale.items())
            try:
                got = await asyncio.gather(
                    *(
                        self.link.command(
                            "HMGET", self.keys.day(ip, day), *(parse_key(k)[3] for k in ks)
                        )
                        for (ip, day), ks in groups
                    )
                )
            except CoordinationUnavailable:
                self._lost()
                raise
            at = time.monotonic()
            for (_, ks), values in zip(groups, got, strict=True):
                for k, v in zip(ks, values, strict=True):
                    found[k] = int(v or 0)
                    self._counts[k] = _Count(found[k], at)
        return [found[k] for k in keys]

    async def seed_counts(self, counts: Mapping[str, int], expires_at: float) -> None:
        groups: dict[tuple[str, int], list[Any]] = {}
        for key, value in counts.items():
            _, day, ip, route = parse_key(key)
            groups.setdefault((ip, day), []).extend((route, int(value)))
        await asyncio.gather(
            *(
                self._script(ip, scripts.SEED, [self.keys.day(ip, day)], [int(expires_at), *pairs])
                for (ip, day), pairs in groups.items()
            )
        )

    async def acquire_slot(self, key: str, limit: int, holder: str, ttl: float, now: float) -> bool:
        _, _, ip, route = parse_key(key)
        _, held, _ = await self._script(
            ip,
            scripts.SLOTS,
            [self.keys.slots(ip, route)],
            [f"{self.worker_id}/{holder}", limit, max(1, int(ttl * 1000))],
        )
        return bool(held)

    async def release_slot(self, key: str, holder: str) -> None:
        _, _, ip, route = parse_key(key)
        # No epoch check: giving back is always safe; an unreachable Redis lets it expire.
        with contextlib.suppress(CoordinationUnavailable):
            await self.link.command(
                "ZREM", self.keys.slots(ip, route), f"{self.worker_id}/{holder}"
            )

    async def slots_held(self, key: str, now: float) -> int:
        _, _, ip, route = parse_key(key)
        _, _, count = await self._script(
            ip, scripts.SLOTS, [self.keys.slots(ip, route)], ["", 0, 0]
        )
        return int(count)

    async def pause(self, key: str, until: float) -> None:
        _, _, ip, route = parse_key(key)
        until_us = int(until * 1e6)
        await self._script(
            ip,
            scripts.PAUSE,
            [self.keys.pauses(ip)],
            [route, until_us, self.keys.channel, f"pause|{until_us}|{ip}|{route}"],
        )
        self._set_pause(ip, route, until)

    async def paused_until(self, keys: Sequence[str], now: float) -> float:
        self._check()
        wanted: list[tuple[str, str]] = []
        load: list[str] = []
        stale = time.monotonic() - (0.0 if not self._pubsub_up else float("inf"))
        for key in keys:
            _, _, ip, route = parse_key(key)
            wanted.append((ip, route))
            at = self._pauses_at.get(ip)
            if (at is None or at < stale) and ip not in load:
                load.append(ip)
        if load:
            await self._load_pauses(load)
        latest = 0.0
        for ip, route in wanted:
            until = self._pauses.get(ip, {}).get(route, 0.0)
            if until > now and until > latest:
                latest = until
        return latest

    def known_counts(self) -> dict[str, int]:
        """The counts last learnt from Redis (for a fallback while it does not answer)."""
        return {k: c.value for k, c in self._counts.items()}

    def known_pause(self, keys: Sequence[str], now: float) -> float:
        """The latest end among `keys` of the pauses last known (no I/O)."""
        latest = 0.0
        for key in keys:
            _, _, ip, route = parse_key(key)
            until = self._pauses.get(ip, {}).get(route, 0.0)
            if until > now and until > latest:
                latest = until
        return latest

    # -- what the engine tells us ----------------------------------------------------------

    def recorded(self, ip: str, route: str, at: float, n: int = 1) -> None:
        """`n` attempts of (ip, route) counted at `at` are now durable in the store (they no
        longer need carrying across a rebuild)."""
        k = (utc_day(at), ip, route)
        left = self._unrecorded.get(k, 0) - n
        if left > 0:
            self._unrecorded[k] = left
        else:
            self._unrecorded.pop(k, None)

    def unrecorded(self) -> dict[tuple[int, str, str], int]:
        """Sends this process counted that the store may not have yet, by (day, ip, route)."""
        return dict(self._unrecorded)

    # -- calls under the epoch -------------------------------------------------------------

    def _check(self) -> None:
        if not self.available:
            raise CoordinationUnavailable("redis unavailable")
        if not self.ready:
            raise CountersRebuilding("counters are being rebuilt")

    async def _script(
        self, ip: str, script: scripts.Script, keys: Sequence[str], args: Sequence[Any]
    ) -> list[Any]:
        self._check()
        try:
            r: list[Any] = await self.link.script(
                script, [self.keys.epoch(ip), *keys], [self.epoch, *args]
            )
        except CoordinationUnavailable:
            self._lost()
            raise
        if r[0] == -1:
            if r[1] is None and await self._first_use(ip):
                return await self._script(ip, script, keys, args)
            self._refused(ip, r[1])
            raise CountersRebuilding(f"epoch refused for {ip}")
        return r

    async def _first_use(self, ip: str) -> bool:
        """An IP with no keys at all while the fleet's epoch is ours and ready: one not known
        at the last rebuild (added by a reload). Build its keys now; True when done."""
        job = self._first.get(ip)
        if job is None:
            job = asyncio.ensure_future(self._build_ip(ip))
            self._first[ip] = job
        try:
            return await asyncio.shield(job)
        finally:
            if job.done():
                self._first.pop(ip, None)

    async def _build_ip(self, ip: str) -> bool:
        try:
            coord: dict[str, str] = await self.link.command("HGETALL", self.keys.coord)
            epoch = self.epoch
            if epoch is None or coord.get("state") != "ready" or coord.get("epoch") != epoch:
                return False
            await self._rebuild_ips(epoch, [ip])
            self.known_ips.add(ip)
            return True
        except CoordinationUnavailable:
            self._lost()
            raise

    def _lost(self) -> None:
        if self._closed:
            return
        if self.available or not self._down_logged:
            log.warning(
                "redis unavailable: mail that needs a shared count waits until it answers"
            )
            self._down_logged = True
        self.available = False
        self._ready_event.clear()
        self._notice()
        self._kick()

    def _refused(self, ip: str, held: str | None) -> None:
        self._drop_stock()
        if held is None:
            self._missing.add(ip)
        self.ready = False
        self._ready_event.clear()
        self._notice()
        self._kick()

    def _notice(self) -> None:
        """Remember what was unrecorded when trouble was first seen (a late joiner of a
        rebuild adds it to the new counts)."""
        if self._noticed is None:
            self._noticed = dict(self._unrecorded)

    def _kick(self) -> None:
        if self._closed or (self._resync is not None and not self._resync.done()):
            return
        self._resync = asyncio.create_task(self._resync_loop(), name="redis-counters-resync")

    # -- resync and rebuild ----------------------------------------------------------------

    async def _resync_loop(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                if await self._sync_once():
                    return
                delay = 0.05
                await asyncio.sleep(0.05)
            except CoordinationUnavailable:
                if self.available or not self._down_logged:
                    log.warning("redis unavailable: mail that needs a shared count waits")
                    self._down_logged = True
                self.available = False
                self.ready = False
                self._notice()
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
            except RedisError as e:
                log.warning("redis refused a coordination command: %s", type(e).__name__)
                await asyncio.sleep(1.0)

    async def _sync_once(self) -> bool:
        coord: dict[str, str] = await self.link.command("HGETALL", self.keys.coord)
        if not self.available:
            if self._down_logged:
                log.warning("redis answers again")
            self._down_logged = False
            self.available = True
        epoch, state = coord.get("epoch"), coord.get("state")
        if state == "ready" and epoch:
            if epoch != self.epoch:
                if self.epoch is not None and epoch not in self._acked and self._noticed:
                    await self._late_charge(epoch, self._noticed)
                self.epoch = epoch
                self._drop_stock()
                self._counts.clear()
                self._pauses_at.clear()
            if self._missing:
                await self._rebuild_ips(epoch, sorted(self._missing))
                self._missing.clear()
            # Pauses of the IPs this process sends from, so none is missed before pub/sub
            # or a take tells of it.
            if self.known_ips:
                await self._load_pauses(sorted(self.known_ips))
            self._noticed = None
            self.ready = True
            self._ready_event.set()
            for callback in self.on_ready:
                callback()
            return True
        self.ready = False
        self._ready_event.clear()
        if state == "rebuilding" and epoch:
            await self._ack(epoch)
        if await self.link.command(
            "SET", self.keys.rebuild_lock, self.worker_id, "NX", "PX", self._lock_ms()
        ):
            # Another worker may have finished a rebuild between our read and the lock.
            now_state = await self.link.command("HGET", self.keys.coord, "state")
            if now_state == "ready":
                await self.link.command("DEL", self.keys.rebuild_lock)
                return False
            await self._full_rebuild()
        return False

    def _lock_ms(self) -> int:
        return int((self.ack_window + 10.0) * 1000)

    async def _ack(self, epoch: str) -> None:
        if epoch in self._acked:
            return
        name = self.keys.unrecorded(epoch)
        cmds: list[Awaitable[Any]] = [
            self.link.command("HINCRBY", name, f"{day}|{ip}|{route}", n)
            for (day, ip, route), n in self._unrecorded.items()
        ]
        cmds.append(self.link.command("EXPIRE", self.keys.unrecorded(epoch), int(2 * DAY)))
        cmds.append(self.link.command("SADD", self.keys.acks(epoch), self.worker_id))
        cmds.append(self.link.command("EXPIRE", self.keys.acks(epoch), int(DAY)))
        await asyncio.gather(*cmds)
        self._acked.add(epoch)

    async def _late_charge(self, epoch: str, noticed: Mapping[tuple[int, str, str], int]) -> None:
        """Joined after the rebuild: add what was unrecorded when the trouble was seen."""
        log.warning(
            "joined the counters rebuild late: adding %d unrecorded sends", sum(noticed.values())
        )
        # An IP the rebuilder did not know has no keys yet: build them first.
        await self._rebuild_ips(epoch, sorted({ip for _, ip, _ in noticed}))
        calls = []
        for (day, ip, route), n in noticed.items():
            for field in (route, ANY_PROVIDER):
                calls.append(
                    self.link.script(
                        scripts.COUNT,
                        [self.keys.epoch(ip), self.keys.day(ip, day)],
                        [epoch, field, n, -1, int((day + 3) * DAY)],
                    )
                )
        await asyncio.gather(*calls)

    async def _full_rebuild(self) -> None:
        """Holder of the rebuild lock: a new epoch, the others join, counts from the store."""
        sec, usec = await self.link.command("TIME")
        epoch = f"{int(sec) * 1_000_000 + int(usec)}"
        log.warning("redis has no counters (restarted empty?): rebuilding under epoch %s", epoch)
        await self.link.command(
            "HSET", self.keys.coord, "epoch", epoch, "state", "rebuilding", "by", self.worker_id
        )
        await self.link.command("PUBLISH", self.keys.channel, f"epoch|{epoch}|rebuilding")
        await self._ack(epoch)
        live = await self.source.live_workers()
        deadline = time.monotonic() + self.ack_window
        while time.monotonic() < deadline:
            joined = int(await self.link.command("SCARD", self.keys.acks(epoch)))
            if live is not None and joined >= live:
                break
            await asyncio.sleep(0.05)
        await self.link.command("PEXPIRE", self.keys.rebuild_lock, self._lock_ms())
        ips = await self._rebuild_ips(epoch, None)
        await self.link.command("HSET", self.keys.coord, "state", "ready")
        await self.link.command("PUBLISH", self.keys.channel, f"epoch|{epoch}|ready")
        await self.link.command("DEL", self.keys.rebuild_lock)
        self.rebuilds += 1
        log.warning("counters rebuilt under epoch %s for %d source IPs", epoch, len(ips))

    async def _rebuild_ips(self, epoch: str, only: Sequence[str] | None) -> list[str]:
        """Write today's and yesterday's counts (store + what workers had unrecorded) and the
        pauses still in force for `only` (None: every IP known) under `epoch`."""
        now = self.clock()
        today = utc_day(now)
        days = (today - 1, today)
        fields: dict[str, dict[int, dict[str, int]]] = {}

        def add(ip: str, day: int, route: str, n: int) -> None:
            per = fields.setdefault(ip, {}).setdefault(day, {})
            per[route] = per.get(route, 0) + n
            per[ANY_PROVIDER] = per.get(ANY_PROVIDER, 0) + n

        for day in days:
            for (ip, route), n in (await self.source.daily_counts(day)).items():
                add(ip, day, route, int(n))
        pending: dict[str, str] = await self.link.command("HGETALL", self.keys.unrecorded(epoch))
        for name, count in pending.items():
            d, ip_route = name.split("|", 1)
            ip, route = ip_route.rsplit("|", 1)
            if int(d) in days:
                add(ip, int(d), route, int(count))
        pauses: dict[str, list[tuple[str, int]]] = {}
        for ip, route, until in await self.source.pauses(now):
            pauses.setdefault(ip, []).append((route, int(until * 1e6)))
        ips = set(fields) | set(pauses) | self.known_ips
        if only is not None:
            ips &= set(only)
            ips |= set(only)
        calls = []
        for ip in sorted(ips):
            keys = [self.keys.epoch(ip)]
            args: list[Any] = [epoch, int((today + 3) * DAY), len(days)]
            for day in days:
                per = fields.get(ip, {}).get(day, {})
                keys.append(self.keys.day(ip, day))
                args.append(len(per))
                for route, n in per.items():
                    args += [route, n]
            keys.append(self.keys.pauses(ip))
            ps = pauses.get(ip, [])
            args.append(len(ps))
            for route, until_us in ps:
                args += [route, until_us]
            calls.append(self.link.script(scripts.REBUILD, keys, args))
        await asyncio.gather(*calls)
        return sorted(ips)

    # -- pauses: cache and pub/sub ---------------------------------------------------------

    async def _load_pauses(self, ips: Sequence[str]) -> None:
        try:
            got = await asyncio.gather(
                *(self.link.command("HGETALL", self.keys.pauses(ip)) for ip in ips)
            )
        except CoordinationUnavailable:
            self._lost()
            raise
        at = time.monotonic()
        for ip, values in zip(ips, got, strict=True):
            self._pauses[ip] = {route: int(u) / 1e6 for route, u in values.items()}
            self._pauses_at[ip] = at

    def _set_pause(self, ip: str, route: str, until: float) -> None:
        self._pauses.setdefault(ip, {})[route] = until
        paused = until > self.clock()
        for key, st in self._stock.items():
            _, _, k_ip, k_route = parse_key(key)
            if k_ip == ip and route in (ANY_PROVIDER, k_route):
                if paused:
                    st.tokens = 0  # held tokens must not be spent under a pause
                st.paused_until = until if paused else 0.0

    def _on_message(self, data: str) -> None:
        kind, _, rest = data.partition("|")
        if kind == "pause":
            until_us, _, ip_route = rest.partition("|")
            ip, _, route = ip_route.rpartition("|")
            until = int(until_us) / 1e6
            self._set_pause(ip, route, until)
            for callback in self.on_pause:
                callback(ip, route, until)
        elif kind == "epoch":
            epoch, _, _state = rest.partition("|")
            if epoch != self.epoch:
                self._drop_stock()
                self.ready = False
                self._ready_event.clear()
                self._notice()
                self._kick()

    def _on_subscribed(self) -> None:
        self._pubsub_up = True
        self._pauses_at.clear()  # messages may have been missed: read pauses again
        self._kick_if_idle()

    def _on_unsubscribed(self) -> None:
        self._pubsub_up = False
        self._lost()  # the link is likely gone too: say so now, resync when it answers

    def _kick_if_idle(self) -> None:
        # After a reconnect Redis may have restarted: check the epoch (cheap when unchanged).
        if self.epoch is not None:
            self._kick()
