"""Admission: caps, rates, pauses, spill by weight, overflow, connection slots
(ip_pools/admission.py), on the in-process counters with a fake clock."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter

from ip_pools import (
    Admission,
    IpState,
    LocalCounters,
    PlatformDomain,
    Policy,
    PoolSpec,
    Reason,
    Shaping,
    ShapingRule,
    SourceIp,
    WarmupAssignment,
    WarmupProgress,
    WarmupSchedule,
    parse_rate,
)
from ip_pools.counters import pause_key
from ip_pools.warmup import DAY, day_of
from tests.support.drive import drive

DOMAIN = (PlatformDomain("send.platform.example"),)
START = dt.date(2026, 12, 1)
T0 = day_of(START) * DAY + 3600.0  # 01:00 UTC on the start day
SCHEDULE = WarmupSchedule("standard", (10, 20, 40), {"google": (4, 8)}, advance_at=0.5)


def ip(address: str, weight: int = 1, state: IpState = IpState.ACTIVE, day: int = 1) -> SourceIp:
    warm = WarmupAssignment("standard", START, day) if state == IpState.WARMING else None
    return SourceIp(address, "mta.example.net", weight, state, warm)


def admission(*pools: PoolSpec, shaping: Shaping | None = None, **kw: float) -> Admission:
    policy = Policy(pools=pools, shaping=shaping or Shaping(), schedules={"standard": SCHEDULE})
    return Admission(policy, LocalCounters(), **kw)  # type: ignore[arg-type]


def pool(name: str, *ips: SourceIp, overflow: str = "wait") -> PoolSpec:
    return PoolSpec(name, ips, DOMAIN, overflow=overflow)


def test_warming_ip_stops_at_its_daily_cap_until_the_next_utc_day() -> None:
    a = admission(pool("warm", ip("10.0.0.1", state=IpState.WARMING)))
    got = [drive(a.admit("10.0.0.1", "yahoo", T0)) for _ in range(12)]
    assert sum(d.ok for d in got) == 10
    assert got[-1] == got[-2]
    assert got[-1].reason == Reason.CAP
    assert got[-1].retry_at == (day_of(START) + 1) * DAY


def test_per_provider_cap_on_top_of_the_total() -> None:
    a = admission(pool("warm", ip("10.0.0.1", state=IpState.WARMING)))
    google = [drive(a.admit("10.0.0.1", "google", T0)).ok for _ in range(6)]
    assert google == [True] * 4 + [False] * 2
    assert drive(a.admit("10.0.0.1", "google", T0)).reason == Reason.PROVIDER_CAP
    others = [drive(a.admit("10.0.0.1", "yahoo", T0)).ok for _ in range(8)]
    assert others == [True] * 6 + [False] * 2  # the total of 10 holds across providers


def test_refund_gives_back_the_days_count() -> None:
    a = admission(pool("warm", ip("10.0.0.1", state=IpState.WARMING)))
    for _ in range(10):
        assert drive(a.admit("10.0.0.1", "yahoo", T0)).ok
    assert not drive(a.admit("10.0.0.1", "yahoo", T0)).ok
    drive(a.refund("10.0.0.1", "yahoo", T0))
    assert drive(a.admit("10.0.0.1", "yahoo", T0 + 1)).ok


def test_day_advances_only_after_enough_was_sent_then_completes() -> None:
    warming = ip("10.0.0.1", state=IpState.WARMING)
    a = admission(pool("warm", warming))
    for _ in range(4):  # under half of day 1's cap of 10
        assert drive(a.admit("10.0.0.1", "yahoo", T0)).ok
    day2 = T0 + DAY
    assert drive(a.caps(warming, "yahoo", day2)).total == 10  # still day 1
    assert a.take_progress_changes()[warming.address] == WarmupProgress(1, day_of(START) + 1)
    for _ in range(5):
        assert drive(a.admit("10.0.0.1", "yahoo", day2)).ok
    assert drive(a.caps(warming, "yahoo", day2 + DAY)).total == 20
    assert a.state(warming, day2 + DAY) == IpState.WARMING
    # Restart: progress comes back from the store, the counts of the day are seeded.
    b = admission(pool("warm", warming))
    b.load_progress({warming.address: WarmupProgress(3, day_of(START) + 5)})
    drive(b.counters.seed_counts({f"day:{day_of(START) + 5}:10.0.0.1:*": 20}, math.inf))
    t = day_of(START) * DAY + 5 * DAY
    assert drive(b.caps(warming, "google", t)).total == 40
    assert drive(b.caps(warming, "google", t)).provider is None  # google's list has 2 days
    assert drive(b.caps(warming, "yahoo", t + DAY)).total is None
    assert b.state(warming, t + DAY) == IpState.ACTIVE  # the schedule is done


def test_a_warmup_that_starts_later_sends_nothing_before() -> None:
    later = SourceIp(
        "10.0.0.1", "m.example", 1, IpState.WARMING, WarmupAssignment("standard", START)
    )
    a = admission(pool("warm", later))
    d = drive(a.admit("10.0.0.1", "yahoo", T0 - 2 * DAY))
    assert (d.ok, d.reason, d.retry_at) == (False, Reason.NOT_STARTED, day_of(START) * DAY)


def test_rate_spaces_messages_and_says_when_to_ask_again() -> None:
    shaping = Shaping(ShapingRule(rate=parse_rate("60/min,burst=2")))
    a = admission(pool("p", ip("10.0.0.1")), shaping=shaping)
    assert drive(a.admit("10.0.0.1", "yahoo", T0)).ok
    assert drive(a.admit("10.0.0.1", "yahoo", T0)).ok
    d = drive(a.admit("10.0.0.1", "yahoo", T0))
    assert (d.ok, d.reason) == (False, Reason.RATE)
    assert abs(d.retry_at - (T0 + 1.0)) < 1e-6
    assert drive(a.admit("10.0.0.1", "yahoo", d.retry_at)).ok
    # Another provider has its own rate.
    assert drive(a.admit("10.0.0.1", "google", T0)).ok


def test_paused_ips_and_pauses_from_counters() -> None:
    a = admission(pool("p", ip("10.0.0.1", state=IpState.PAUSED), ip("10.0.0.2")))
    d = drive(a.admit("10.0.0.1", "yahoo", T0))
    assert (d.ok, d.retry_at, d.reason) == (False, math.inf, Reason.PAUSED)
    drive(a.counters.pause(pause_key("10.0.0.2", "google"), T0 + 60))
    assert drive(a.admit("10.0.0.2", "google", T0)).retry_at == T0 + 60
    assert drive(a.admit("10.0.0.2", "yahoo", T0)).ok
    c = drive(a.open_session("p", "google", "s1", T0))
    assert (c.source, c.retry_at, c.reason) == (None, T0 + 60, Reason.PAUSED)


def test_sessions_spread_by_weight_and_hold_connection_slots() -> None:
    shaping = Shaping(ShapingRule(connections=30))
    a = admission(pool("p", ip("10.0.0.1", 3), ip("10.0.0.2", 1)), shaping=shaping)
    picks: Counter[str] = Counter()
    holders: dict[str, list[str]] = {}
    for i in range(40):
        c = drive(a.open_session("p", "google", f"s{i}", T0))
        assert c.source is not None
        picks[c.source.address] += 1
        holders.setdefault(c.source.address, []).append(f"s{i}")
    # By weight: the heavy IP may hold all 30 connections, the light one its share (10).
    assert picks == {"10.0.0.1": 30, "10.0.0.2": 10}
    none = drive(a.open_session("p", "google", "s41", T0))
    assert (none.source, none.reason, none.retry_at) == (None, Reason.CONNECTIONS, T0 + 1.0)
    light = holders["10.0.0.2"][0]
    drive(a.renew_session("10.0.0.2", "google", light, T0))  # a holder renews its own slot
    assert drive(a.counters.slots_held("conn:10.0.0.2:google", T0)) == 10
    drive(a.close_session("10.0.0.2", "google", light))
    c = drive(a.open_session("p", "google", "z", T0))
    assert c.source is not None and c.source.address == "10.0.0.2"
    # When the heavy IP has no room (paused for google), the light one may use them all.
    drive(a.counters.pause("pause:10.0.0.1:google", T0 + 60))
    more = [drive(a.open_session("p", "google", f"y{i}", T0)).source for i in range(25)]
    assert sum(1 for m in more if m is not None and m.address == "10.0.0.2") == 20


def test_spill_to_ips_with_room_then_wait() -> None:
    a = admission(pool("p", ip("10.0.0.1", 5, IpState.WARMING), ip("10.0.0.2", 1, IpState.WARMING)))
    for _ in range(10):
        assert drive(a.admit("10.0.0.1", "yahoo", T0)).ok  # the heavy IP's cap is full
    picks = [drive(a.open_session("p", "yahoo", f"s{i}", T0)).source for i in range(5)]
    assert {p.address for p in picks if p} == {"10.0.0.2"}
    for _ in range(10):
        assert drive(a.admit("10.0.0.2", "yahoo", T0)).ok
    c = drive(a.open_session("p", "yahoo", "t", T0))
    assert (c.source, c.reason, c.retry_at) == (None, Reason.CAP, (day_of(START) + 1) * DAY)


def test_overflow_to_another_pool_and_back() -> None:
    a = admission(
        pool("warm", ip("10.0.0.1", state=IpState.WARMING), overflow="shared"),
        pool("shared", ip("10.0.0.9")),
        pool("probation", ip("10.0.1.1", state=IpState.PAUSED)),
    )
    c = drive(a.open_session("warm", "yahoo", "s", T0))
    assert (c.source and c.source.address, c.pool) == ("10.0.0.1", "warm")
    for _ in range(10):
        assert drive(a.admit("10.0.0.1", "yahoo", T0)).ok
    c = drive(a.open_session("warm", "yahoo", "s2", T0))
    assert (c.source and c.source.address, c.pool) == ("10.0.0.9", "shared")
    # "wait": nothing of another pool is used.
    c = drive(a.open_session("probation", "yahoo", "s3", T0))
    assert (c.source, c.pool, c.retry_at) == (None, "probation", math.inf)
    c = drive(a.open_session(None, "yahoo", "s4", T0 + DAY))  # the first pool; a new day
    assert c.pool == "warm"


def test_share_divides_rates_and_caps_between_processes() -> None:
    shaping = Shaping(ShapingRule(connections=10, rate=parse_rate("100/s,burst=10")))
    a = admission(pool("p", ip("10.0.0.1", state=IpState.WARMING)), shaping=shaping, share=0.5)
    rule = a.rule("yahoo")
    assert rule.connections == 5 and rule.rate is not None and rule.rate.count == 50
    assert sum(drive(a.admit("10.0.0.1", "yahoo", T0 + i)).ok for i in range(20)) == 5


def test_token_batches_are_kept_for_the_next_messages() -> None:
    class Counting(LocalCounters):
        takes = 0

        async def take_tokens(self, key, rate, want, now):  # type: ignore[no-untyped-def]
            Counting.takes += 1
            return await super().take_tokens(key, rate, want, now)

    policy = Policy(
        pools=(pool("p", ip("10.0.0.1")),),
        shaping=Shaping(ShapingRule(rate=parse_rate("1000/s,burst=20"))),
    )
    a = Admission(policy, Counting(), token_batch=10, token_hold=0.05)
    assert all(drive(a.admit("10.0.0.1", "yahoo", T0)).ok for _ in range(20))
    assert Counting.takes == 2
    assert not drive(a.admit("10.0.0.1", "yahoo", T0)).ok
