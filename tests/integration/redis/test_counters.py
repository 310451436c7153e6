"""RedisCounters against the real Redis: the Counters contract on Redis's clock, several
instances sharing one set of counts, pauses seen by all, and what happens when Redis stops
or restarts empty (a private redis-server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import pytest

from ip_pools import Counters, Rate
from ip_pools.counters import count_key, pause_key, rate_key, slot_key
from ip_pools.redis_counters.counters import (
    RedisCounters,
    parse_key,
    split_ip_route,
)
from ip_pools.redis_counters.keyspace import Keyspace
from ip_pools.redis_counters.link import CoordinationUnavailable
from ip_pools.warmup import DAY, utc_day
from tests.support.redis_server import SHARED_URL, RedisServer, TcpGate, unique_prefix

pytestmark = pytest.mark.redis

IP = "198.51.100.7"
IP6 = "2001:db8::7"

Factory = Callable[..., Awaitable[RedisCounters]]


class Source:
    """A rebuild source with counts set by the test (the store's daily counts)."""

    def __init__(self) -> None:
        self.counts: dict[int, dict[tuple[str, str], int]] = {}
        self.paused: list[tuple[str, str, float]] = []
        self.live: int | None = None
        self.reads = 0

    async def daily_counts(self, day: int) -> Mapping[tuple[str, str], int]:
        self.reads += 1
        return dict(self.counts.get(day, {}))

    async def pauses(self, now: float) -> Sequence[tuple[str, str, float]]:
        return [p for p in self.paused if p[2] > now]

    async def live_workers(self) -> int | None:
        return self.live


@pytest.fixture
async def counters() -> AsyncIterator[Factory]:
    made: list[RedisCounters] = []
    prefix = unique_prefix()

    async def make(url: str = SHARED_URL, **kw: object) -> RedisCounters:
        kw.setdefault("keyspace", Keyspace(prefix))
        kw.setdefault("worker_id", f"w{len(made)}")
        kw.setdefault("ack_window", 0.3)
        c = RedisCounters(url, **kw)  # type: ignore[arg-type]
        made.append(c)
        await c.start(wait=5.0)
        return c

    yield make
    for c in made:
        await c.close()


def test_keys_parse_with_ipv6_and_sites() -> None:
    assert split_ip_route("2001:db8::7:google") == ("2001:db8::7", "google")
    assert split_ip_route("2001:db8::7:mx:mx1.example.com") == ("2001:db8::7", "mx:mx1.example.com")
    assert parse_key(count_key(20000, IP6, "mx:a.example")) == ("day", 20000, IP6, "mx:a.example")
    assert parse_key(count_key(20000, IP)) == ("day", 20000, IP, "*")
    assert parse_key(pause_key(IP6)) == ("pause", -1, IP6, "*")
    assert parse_key(slot_key(IP, "google")) == ("conn", -1, IP, "google")
    with pytest.raises(ValueError):
        parse_key("nonsense:1.2.3.4:x")


async def test_is_counters_and_rates_follow_gcra(counters: Factory) -> None:
    c = await counters()
    assert isinstance(c, Counters)
    assert c.state == "ready"
    rate = Rate(20, 1.0, burst=5)  # 20/s: a batch is min(burst, 150 ms of the rate) = 3
    key = rate_key(IP, "google")
    # The IP's first use builds its keys; its rate starts empty (no burst) and fills.
    await c.take_tokens(key, rate, 1, time.time())
    await asyncio.sleep(0.3)
    trips = c.link.stats.round_trips
    g = await c.take_tokens(key, rate, 8, time.time())
    assert 1 <= g.granted <= 3  # never more than a batch at once
    # Taking one at a time for a second: at most the burst, the rate and one batch held.
    started = time.time()
    granted = g.granted
    refusals = 0
    while time.time() - started < 1.0:
        g = await c.take_tokens(key, rate, 1, time.time())
        granted += g.granted
        if not g.granted:
            refusals += 1
            assert g.retry_at > time.time() - 0.001
            await asyncio.sleep(max(0.0, g.retry_at - time.time()))
    elapsed = time.time() - started
    assert granted <= 5 + 20 * elapsed + 3
    assert granted >= 10  # and the rate flows
    assert refusals > 0
    # Round trips: one per batch or so, not one per token.
    assert c.link.stats.round_trips - trips < granted / 1.5


async def test_two_processes_share_a_rate(counters: Factory) -> None:
    a, b = await counters(), await counters()
    a.window_us = b.window_us = 10_000_000
    rate = Rate(20, 1.0, burst=10)
    key = rate_key(IP6, "mx:mx.example")
    await a.take_tokens(key, rate, 1, time.time())  # first use; the bucket fills in 0.5 s
    await asyncio.sleep(0.55)
    ga = await a.take_tokens(key, rate, 10, time.time())
    gb = await b.take_tokens(key, rate, 10, time.time())
    assert ga.granted == 10 and gb.granted <= 1


async def test_counts_never_pass_the_cap(counters: Factory) -> None:
    a, b = await counters(), await counters()
    day = utc_day(time.time())
    key = count_key(day, IP, "google")
    exp = (day + 2) * DAY
    assert await a.add_count(key, 12, 30, exp) == 12
    got = await asyncio.gather(*(x.add_count(key, 1, 30, exp) for x in (a, b) * 25))
    assert sum(got) == 18
    assert await a.add_count(key, -5, None, exp) == -5
    assert await a.counts([key, count_key(day, IP)]) == [25, 0]
    b.count_fresh = 0.0
    assert await b.counts([key]) == [25]
    await b.seed_counts({key: 40, count_key(day, IP): 41}, exp)
    await b.seed_counts({key: 3}, exp)  # never lowers
    assert await b.counts([key, count_key(day, IP)]) == [40, 41]
    by_a = 12 + sum(got[0::2])  # what a counted (at least 12), less the 5 it gave back
    assert a.unrecorded() == {(day, IP, "google"): by_a - 5}
    assert b.unrecorded() == ({(day, IP, "google"): 30 - by_a} if by_a < 30 else {})
    a.recorded(IP, "google", time.time(), 4)
    assert a.unrecorded() == {(day, IP, "google"): by_a - 9}


async def test_slots_are_leases_across_processes(counters: Factory) -> None:
    a, b = await counters(), await counters()
    key = slot_key(IP, "google")
    now = time.time()
    assert await a.acquire_slot(key, 2, "s1", 0.3, now)
    assert await b.acquire_slot(key, 2, "s1", 30.0, now)  # same name, another process
    assert not await b.acquire_slot(key, 2, "s2", 30.0, now)
    assert await a.slots_held(key, now) == 2
    await asyncio.sleep(0.35)  # a's lease ran out (a died, say): the slot comes back
    assert await b.acquire_slot(key, 2, "s2", 30.0, now)
    await b.release_slot(key, "s2")
    assert await a.slots_held(key, now) == 1


async def test_a_pause_raised_by_one_stops_the_other(counters: Factory) -> None:
    a, b = await counters(), await counters()
    rate = Rate(1000, 1.0, burst=10)
    keys = [pause_key(IP), pause_key(IP, "google")]
    await b.take_tokens(rate_key(IP, "google"), rate, 1, time.time())  # first use: empty
    await asyncio.sleep(0.02)  # the burst of 10 refills
    assert await b.paused_until(keys, time.time()) == 0.0  # b has read the pauses once
    assert (await b.take_tokens(rate_key(IP, "google"), rate, 1, time.time())).granted == 1
    trips = b.link.stats.round_trips
    until = time.time() + 0.5
    await a.pause(pause_key(IP, "google"), until)
    deadline = time.monotonic() + 1.0
    while await b.paused_until(keys, time.time()) == 0.0 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    assert abs(await b.paused_until(keys, time.time()) - until) < 1e-3
    assert b.link.stats.round_trips == trips  # it came by pub/sub, not by asking
    g = await b.take_tokens(rate_key(IP, "google"), rate, 1, time.time())
    assert g.granted == 0 and abs(g.retry_at - until) < 1e-3  # and the script refuses too
    assert (await b.take_tokens(rate_key(IP, "yahoo"), rate, 1, time.time())).granted == 1
    await a.pause(pause_key(IP, "google"), 0.0)  # lifted
    await asyncio.sleep(0.05)
    assert await b.paused_until(keys, time.time()) == 0.0


@pytest.fixture
async def private() -> AsyncIterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


async def test_redis_stopped_refuses_then_resumes(counters: Factory, private: RedisServer) -> None:
    c = await counters(private.url, timeout=0.3)
    assert c.rebuilds == 1  # the first start on an empty Redis builds the counters too
    day = utc_day(time.time())
    key = count_key(day, IP, "google")
    assert await c.add_count(key, 3, 10, (day + 2) * DAY) == 3
    private.stop()
    with pytest.raises(CoordinationUnavailable):
        await c.add_count(key, 1, 10, (day + 2) * DAY)
    assert c.state == "unavailable"
    with pytest.raises(CoordinationUnavailable):
        await c.take_tokens(rate_key(IP, "google"), Rate(10, 1.0), 1, time.time())
    private.start()  # empty: the counts come back from the store and the unrecorded sends
    assert await c.wait_ready(10.0)
    assert c.state == "ready" and c.rebuilds == 2
    assert await c.counts([key, count_key(day, IP)]) == [3, 3]


async def test_restart_empty_epoch_refuses_until_rebuilt(
    counters: Factory, private: RedisServer
) -> None:
    """Three processes; Redis restarts empty; the epoch refuses; one rebuilds today's counts
    from the store plus what each had not recorded; the cap holds across the restart."""
    source = Source()
    procs = [await counters(private.url, source=source, timeout=0.3) for _ in range(3)]
    day = utc_day(time.time())
    key = count_key(day, IP, "google")
    exp = (day + 2) * DAY
    for i, p in enumerate(procs):
        assert await p.add_count(key, 10 + i, 100, exp) == 10 + i  # 33 counted
    # The store has the attempts of 20 of them (the rest are in flight, unrecorded).
    source.counts[day] = {(IP, "google"): 20}
    procs[0].recorded(IP, "google", time.time(), 10)
    procs[1].recorded(IP, "google", time.time(), 10)
    source.live = 3
    private.restart()
    # Whoever asks first finds no epoch: refused, not granted a fresh burst.
    with pytest.raises(CoordinationUnavailable):
        await procs[2].add_count(key, 1, 100, exp)
    for p in procs:
        with pytest.raises(CoordinationUnavailable):
            await p.take_tokens(rate_key(IP, "google"), Rate(10, 1.0, burst=10), 5, time.time())
    for p in procs:
        assert await p.wait_ready(10.0)
    assert sum(p.rebuilds for p in procs) == 2  # at first start, and after the restart
    # 20 from the store + 0 + 1 + 12 unrecorded = 33: nothing forgotten.
    procs[0].count_fresh = 0.0
    assert await procs[0].counts([key, count_key(day, IP)]) == [33, 33]
    assert await procs[1].add_count(key, 100, 100, exp) == 67
    # The rate starts empty after the rebuild: no burst from an empty key.
    g = await procs[0].take_tokens(rate_key(IP, "google"), Rate(10, 1.0, burst=10), 5, time.time())
    assert g.granted <= 1


async def test_pauses_come_back_from_the_store(counters: Factory, private: RedisServer) -> None:
    source = Source()
    c = await counters(private.url, source=source, timeout=0.3)
    until = time.time() + 60
    await c.pause(pause_key(IP, "google"), until)
    source.paused = [(IP, "google", until), (IP, "yahoo", time.time() - 1)]
    private.restart()
    with pytest.raises(CoordinationUnavailable):
        await c.take_tokens(rate_key(IP, "google"), Rate(10, 1.0), 1, time.time())
    assert await c.wait_ready(10.0)
    other = await counters(private.url, source=source)
    got = await other.paused_until([pause_key(IP), pause_key(IP, "google")], time.time())
    assert abs(got - until) < 1e-3
    assert await other.paused_until([pause_key(IP, "yahoo")], time.time()) == 0.0


async def test_a_late_joiner_adds_what_it_had_not_recorded(
    counters: Factory, private: RedisServer
) -> None:
    """A process cut off from Redis during the rebuild adds its unrecorded sends when it
    comes back, so the rebuilt counts still hold them."""
    source = Source()
    gate = await TcpGate("127.0.0.1", private.port).start()
    try:
        a = await counters(private.url, source=source, timeout=0.3)
        b = await counters(gate.url(), source=source, timeout=0.3)
        day = utc_day(time.time())
        key = count_key(day, IP, "google")
        exp = (day + 2) * DAY
        assert await b.add_count(key, 7, 100, exp) == 7
        gate.cut()  # b is partitioned away
        private.restart()
        with pytest.raises(CoordinationUnavailable):
            await b.add_count(key, 1, 100, exp)
        with pytest.raises(CoordinationUnavailable):
            await a.add_count(key, 1, 100, exp)
        assert await a.wait_ready(10.0)
        a.count_fresh = 0.0
        assert await a.counts([key]) == [0]  # b's 7 are not in the store, and b did not join
        assert b.state == "unavailable"
        gate.mend()
        assert await b.wait_ready(10.0)
        assert await a.counts([key, count_key(day, IP)]) == [7, 7]
    finally:
        await gate.close()
