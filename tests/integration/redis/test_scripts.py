"""The Lua scripts against the real Redis: GCRA with partial grants on Redis's clock,
day counts with caps, slot leases, pauses, the epoch check and the rebuild."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from ip_pools.redis_counters import scripts
from ip_pools.redis_counters.keyspace import Keyspace
from ip_pools.redis_counters.link import RedisLink
from tests.support.redis_server import SHARED_URL, unique_prefix

pytestmark = pytest.mark.redis

IP = "198.51.100.7"
V6 = "2001:db8::7"
EPOCH = "e1"


@pytest.fixture
async def link() -> AsyncIterator[RedisLink]:
    link = RedisLink(SHARED_URL)
    link.start()
    yield link
    await link.close()


@pytest.fixture
def ks() -> Keyspace:
    return Keyspace(unique_prefix())


async def set_epoch(
    link: RedisLink, ks: Keyspace, ip: str, epoch: str = EPOCH, rebuilt_us: int = 0
) -> None:
    await link.command("SET", ks.epoch(ip), f"{epoch}|{rebuilt_us}", "EX", 600)


async def take(
    link: RedisLink,
    ks: Keyspace,
    want: int,
    *,
    interval_us: float,
    burst: int,
    window_us: int = 0,
    ip: str = IP,
    route: str = "google",
    epoch: str = EPOCH,
    least: float = 0.0,
) -> list[int]:
    r = await link.script(
        scripts.RATE,
        [ks.epoch(ip), ks.rate(ip, route), ks.pauses(ip)],
        [epoch, route, want, interval_us, burst, window_us, least],
    )
    return [int(x) if x is not None else 0 for x in r] if r[0] != -1 else r


async def test_gcra_grants_the_burst_then_at_the_rate(link: RedisLink, ks: Keyspace) -> None:
    await set_epoch(link, ks, IP)
    # 10/s, burst 5: a batch of 8 gets the 5 of the burst, then one per 100 ms.
    code, granted, wait, _ = await take(link, ks, 8, interval_us=100_000, burst=5)
    assert (code, granted) == (1, 5)
    assert 90_000 < wait <= 100_000
    code, granted, wait, _ = await take(link, ks, 8, interval_us=100_000, burst=5)
    assert granted == 0 and 0 < wait <= 100_000
    await asyncio.sleep(wait / 1e6 + 0.005)
    code, granted, _, _ = await take(link, ks, 8, interval_us=100_000, burst=5)
    assert granted == 1


async def test_burst_one_never_grants_a_batch_whole(link: RedisLink, ks: Keyspace) -> None:
    await set_epoch(link, ks, IP)
    for _ in range(3):
        _, granted, wait, _ = await take(link, ks, 10, interval_us=1_000, burst=1)
        assert granted <= 1
        await asyncio.sleep(wait / 1e6 + 0.002)


async def test_window_caps_a_take_and_low_rates_get_one(link: RedisLink, ks: Keyspace) -> None:
    await set_epoch(link, ks, IP)
    # 50/s (20 ms), burst 100, window 150 ms: at most 7 at once.
    _, granted, _, _ = await take(link, ks, 100, interval_us=20_000, burst=100, window_us=150_000)
    assert granted == 7
    # 1/min, window 150 ms: one token.
    _, granted, _, _ = await take(
        link, ks, 100, interval_us=60e6, burst=10, window_us=150_000, route="slow"
    )
    assert granted == 1


async def test_least_grants_a_batch_or_says_when_it_fits(link: RedisLink, ks: Keyspace) -> None:
    await set_epoch(link, ks, IP)
    # 100/s, burst 10: the burst goes, then a take of 6 "at least all" waits for 6 to fit.
    _, granted, _, _ = await take(link, ks, 10, interval_us=10_000, burst=10, least=1.0)
    assert granted == 10
    _, granted, wait, _ = await take(link, ks, 6, interval_us=10_000, burst=10, least=1.0)
    assert granted == 0 and 50_000 < wait <= 60_000  # the 6th conforms ~60 ms on
    await asyncio.sleep(0.03)
    _, granted, _, _ = await take(link, ks, 6, interval_us=10_000, burst=10, least=1.0)
    assert granted == 0  # 3 conform: not enough
    _, granted, _, _ = await take(link, ks, 6, interval_us=10_000, burst=10, least=0.5)
    assert granted == 3  # half the batch is enough
    # A batch capped by the window asks at least its capped size, not the asked one.
    await asyncio.sleep(0.11)
    _, granted, _, _ = await take(link, ks, 50, interval_us=10_000, burst=10, window_us=50_000,
                                  least=1.0)
    assert granted == 5


async def test_peek_takes_nothing(link: RedisLink, ks: Keyspace) -> None:
    await set_epoch(link, ks, IP)
    _, granted, wait, _ = await take(link, ks, 0, interval_us=100_000, burst=1)
    assert (granted, wait) == (0, 0)
    _, granted, _, _ = await take(link, ks, 1, interval_us=100_000, burst=1)
    assert granted == 1
    _, granted, wait, _ = await take(link, ks, 0, interval_us=100_000, burst=1)
    assert granted == 0 and wait > 0


async def test_concurrent_takers_never_exceed_the_rate(link: RedisLink, ks: Keyspace) -> None:
    """Four links take as fast as they can for 0.5 s: grants <= burst + elapsed * rate."""
    await set_epoch(link, ks, IP)
    links = [RedisLink(SHARED_URL) for _ in range(4)]
    for lk in links:
        lk.start()
    granted = 0
    started = time.monotonic()

    async def taker(lk: RedisLink) -> None:
        nonlocal granted
        while time.monotonic() - started < 0.5:
            _, n, _, _ = await take(lk, ks, 3, interval_us=5_000, burst=4)
            granted += n

    try:
        await asyncio.gather(*(taker(lk) for lk in links))
    finally:
        for lk in links:
            await lk.close()
    elapsed = time.monotonic() - started
    assert granted <= 4 + elapsed / 0.005 + 1
    assert granted > 4 + 1  # and tokens came back at the rate after the burst


async def test_epoch_refused_when_missing_or_stale(link: RedisLink, ks: Keyspace) -> None:
    r = await take(link, ks, 1, interval_us=1_000, burst=1)
    assert r[0] == -1 and r[1] is None
    await set_epoch(link, ks, IP, "e2")
    r = await take(link, ks, 1, interval_us=1_000, burst=1)
    assert r[0] == -1 and r[1] == "e2"
    for script, keys, args in (
        (scripts.COUNT, [ks.epoch(IP), ks.day(IP, 1)], [EPOCH, "*", 1, -1, 2**31]),
        (scripts.SEED, [ks.epoch(IP), ks.day(IP, 1)], [EPOCH, 2**31, "*", 5]),
        (scripts.SLOTS, [ks.epoch(IP), ks.slots(IP, "g")], [EPOCH, "h", 1, 1000]),
        (scripts.PAUSE, [ks.epoch(IP), ks.pauses(IP)], [EPOCH, "*", 1, ks.channel, "x"]),
    ):
        r = await link.script(script, keys, args)
        assert r[0] == -1 and r[1] == "e2", script.name
    assert await link.command("EXISTS", ks.day(IP, 1), ks.slots(IP, "g"), ks.pauses(IP)) == 0


async def test_missing_rate_key_after_rebuild_is_empty(link: RedisLink, ks: Keyspace) -> None:
    """An empty GCRA key would grant a full burst; just after a rebuild it grants none."""
    now_us = int(time.time() * 1e6)
    await set_epoch(link, ks, IP, rebuilt_us=now_us)
    _, granted, wait, _ = await take(link, ks, 10, interval_us=100_000, burst=10)
    assert granted <= 1
    assert wait > 0


async def test_day_counts_never_pass_the_cap(link: RedisLink, ks: Keyspace) -> None:
    await set_epoch(link, ks, IP)
    key = [ks.epoch(IP), ks.day(IP, 20000)]
    at = int(time.time()) + 3600
    results = await asyncio.gather(
        *(link.script(scripts.COUNT, key, [EPOCH, "google", 1, 50, at]) for _ in range(80))
    )
    assert sum(r[1] for r in results) == 50
    assert max(r[2] for r in results) == 50
    r = await link.script(scripts.COUNT, key, [EPOCH, "google", -3, -1, at])
    assert r[1:] == [-3, 47]
    r = await link.script(scripts.COUNT, key, [EPOCH, "google", -100, -1, at])
    assert r[1:] == [-47, 0]
    assert 3500 < await link.command("TTL", ks.day(IP, 20000)) <= 3600
    await link.script(scripts.SEED, key, [EPOCH, at, "google", 12, "*", 30])
    await link.script(scripts.SEED, key, [EPOCH, at, "google", 5])
    assert await link.command("HGETALL", ks.day(IP, 20000)) == {"google": "12", "*": "30"}


async def test_slots_are_leases(link: RedisLink, ks: Keyspace) -> None:
    await set_epoch(link, ks, IP)
    keys = [ks.epoch(IP), ks.slots(IP, "google")]

    async def acquire(holder: str, ttl_ms: int = 300) -> list[int]:
        return list(await link.script(scripts.SLOTS, keys, [EPOCH, holder, 2, ttl_ms]))

    assert await acquire("a") == [1, 1, 1]
    assert await acquire("b", 5_000) == [1, 1, 2]
    assert await acquire("c") == [1, 0, 2]
    assert await acquire("a") == [1, 1, 2]  # renewing keeps the slot
    await asyncio.sleep(0.35)  # a's lease ends: its slot comes back
    assert await acquire("c") == [1, 1, 2]
    await link.command("ZREM", ks.slots(IP, "google"), "b")
    assert await acquire("") == [1, 0, 1]


async def test_pause_is_published_and_ends(link: RedisLink, ks: Keyspace) -> None:
    await set_epoch(link, ks, IP)
    pubsub = link.redis.pubsub()
    await pubsub.subscribe(ks.channel)
    until = int((time.time() + 0.3) * 1e6)
    r = await link.script(
        scripts.PAUSE,
        [ks.epoch(IP), ks.pauses(IP)],
        [EPOCH, "google", until, ks.channel, f"pause|{IP}|google|{until}"],
    )
    assert r == [1]
    msg = None
    for _ in range(20):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if msg:
            break
    await pubsub.aclose()
    assert msg is not None and msg["data"] == f"pause|{IP}|google|{until}"
    code, _, end, _ = await take(link, ks, 1, interval_us=1_000, burst=1)
    assert (code, end) == (-2, until)
    _, granted, _, _ = await take(link, ks, 1, interval_us=1_000, burst=1, route="yahoo")
    assert granted == 1
    await asyncio.sleep(0.32)
    _, granted, _, _ = await take(link, ks, 1, interval_us=1_000, burst=1)
    assert granted == 1


async def test_rebuild_sets_counts_pauses_and_epoch(link: RedisLink, ks: Keyspace) -> None:
    for ip in (IP, V6):
        until = int((time.time() + 60) * 1e6)
        ended = int((time.time() - 1) * 1e6)
        keys = [ks.epoch(ip), ks.day(ip, 20000), ks.day(ip, 20001), ks.pauses(ip)]
        args = [
            EPOCH,
            int(time.time()) + 3600,
            2,
            2,
            "*",
            40,
            "google",
            30,
            1,
            "*",
            3,
            2,
            "google",
            until,
            "yahoo",
            ended,
        ]
        assert await link.script(scripts.REBUILD, keys, args) == 1
        assert await link.script(scripts.REBUILD, keys, args) == 0
        assert await link.command("HGETALL", ks.day(ip, 20000)) == {"*": "40", "google": "30"}
        assert await link.command("HGETALL", ks.day(ip, 20001)) == {"*": "3"}
        assert await link.command("HGETALL", ks.pauses(ip)) == {"google": str(until)}
        epoch = await link.command("GET", ks.epoch(ip))
        assert epoch.startswith(f"{EPOCH}|")
        assert abs(int(epoch.split("|")[1]) - time.time() * 1e6) < 5e6


async def test_noscript_reloads_and_retries() -> None:
    """SCRIPT FLUSH on a private server: the next call loads the scripts again."""
    from tests.support.redis_server import RedisServer

    server = RedisServer().start()
    link = RedisLink(server.url)
    link.start()
    ks = Keyspace("t")
    try:
        await set_epoch(link, ks, IP)
        assert (await take(link, ks, 1, interval_us=1000, burst=1))[1] == 1
        await link.command("SCRIPT", "FLUSH")
        trips = link.stats.round_trips
        assert (await take(link, ks, 1, interval_us=1, burst=1))[0] == 1
        assert link.stats.round_trips == trips + 3  # refused, load, again
    finally:
        await link.close()
        server.close()
