"""on_unavailable = "local": while Redis does not answer, each process counts at its share
of what was left; the fleet stays under the cap, and the counts reach Redis when it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from ip_pools import Rate
from ip_pools.counters import count_key, rate_key, slot_key
from ip_pools.redis_counters.counters import RedisCounters
from ip_pools.redis_counters.fallback import FallbackCounters
from ip_pools.redis_counters.keyspace import Keyspace
from ip_pools.warmup import DAY, utc_day
from tests.support.redis_server import RedisServer, TcpGate

pytestmark = pytest.mark.redis

IP = "198.51.100.9"


@pytest.fixture
async def fleet() -> AsyncIterator[tuple[RedisServer, TcpGate, list[FallbackCounters]]]:
    server = RedisServer().start()
    gate = await TcpGate("127.0.0.1", server.port).start()
    shared = [
        RedisCounters(
            gate.url(), worker_id=f"w{i}", keyspace=Keyspace("fb"), timeout=0.3, ack_window=0.2
        )
        for i in range(2)
    ]
    for s in shared:
        await s.start(wait=5.0)
    yield server, gate, [FallbackCounters(s, lambda: 0.5) for s in shared]
    for s in shared:
        await s.close()
    await gate.close()
    server.close()


async def test_local_counts_stay_under_the_cap_and_are_handed_over(
    fleet: tuple[RedisServer, TcpGate, list[FallbackCounters]],
) -> None:
    _, gate, (a, b) = fleet
    day = utc_day(time.time())
    key = count_key(day, IP, "google")
    exp = (day + 2) * DAY
    assert await a.add_count(key, 10, 40, exp) == 10
    assert await b.counts([key]) == [10]  # b has seen the shared count
    gate.cut()
    with pytest.raises(ConnectionError):
        await a.shared.add_count(key, 1, 40, exp)  # a notices; b notices on its next call
    got = [await x.add_count(key, 1, 40, exp) for x in (a, b) for _ in range(40)]
    assert a.local_mode and b.local_mode
    assert sum(got) == 30  # 15 each: half of the 30 left, never over the cap together
    # Rates and connection limits are halved meanwhile.
    g = await a.take_tokens(rate_key(IP, "google"), Rate(10, 1.0, burst=4), 4, time.time())
    assert g.granted == 2
    assert await a.acquire_slot(slot_key(IP, "google"), 2, "s1", 30.0, time.time())
    assert not await a.acquire_slot(slot_key(IP, "google"), 2, "s2", 30.0, time.time())
    gate.mend()
    for x in (a, b):
        assert await x.shared.wait_ready(10.0)
    assert await a.add_count(key, 1, 40, exp) == 0  # handed over: 10 + 30 = the cap
    assert not a.local_mode
    await asyncio.sleep(0)
    b.shared.count_fresh = 0.0
    assert await b.counts([key]) == [40]
    assert not b.local_mode


async def test_a_process_back_first_holds_back_the_shares_of_those_still_cut_off() -> None:
    server = RedisServer().start()
    gates = [await TcpGate("127.0.0.1", server.port).start() for _ in range(2)]
    shared = [
        RedisCounters(
            g.url(), worker_id=f"w{i}", keyspace=Keyspace("fb2"), timeout=0.3, ack_window=0.2
        )
        for i, g in enumerate(gates)
    ]
    try:
        for s in shared:
            await s.start(wait=5.0)
        a, b = (FallbackCounters(s, lambda: 0.5, grace=0.5) for s in shared)
        day = utc_day(time.time())
        key = count_key(day, IP, "google")
        exp = (day + 2) * DAY
        assert await a.add_count(key, 10, 40, exp) == 10
        assert await b.counts([key]) == [10]
        for g in gates:
            g.cut()
        assert sum([await x.add_count(key, 1, 40, exp) for x in (a, b) for _ in range(20)]) == 30
        gates[0].mend()  # a is back; b is still cut off with 15 counted locally
        assert await a.shared.wait_ready(10.0)
        assert await a.add_count(key, 5, 40, exp) == 0  # b's 15 may still come: held back
        assert b.local_mode
        gates[1].mend()
        assert await b.shared.wait_ready(10.0)
        await asyncio.sleep(0.6)  # grace over
        assert await a.add_count(key, 5, 40, exp) == 0  # b handed over: 40 in Redis
        a.shared.count_fresh = 0.0
        assert await a.counts([key]) == [40]
    finally:
        for s in shared:
            await s.close()
        for g in gates:
            await g.close()
        server.close()
