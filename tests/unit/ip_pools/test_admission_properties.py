"""Admission never over a cap, a rate or a connection limit, whatever the sequence of asks,
refunds, sessions and clock moves (a fake clock; the in-process counters)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from ip_pools import (
    Admission,
    IpState,
    LocalCounters,
    PlatformDomain,
    Policy,
    PoolSpec,
    Rate,
    Shaping,
    ShapingRule,
    SourceIp,
    WarmupAssignment,
    WarmupSchedule,
)
from ip_pools.counters import EPSILON
from ip_pools.warmup import DAY, day_of, utc_day
from tests.support.drive import drive

START = dt.date(2026, 12, 1)
PROVIDERS = ("google", "microsoft", "mx:mx.small.example")

rates = st.builds(
    Rate,
    count=st.integers(min_value=1, max_value=50).map(float),
    per=st.sampled_from([1.0, 60.0]),
    burst=st.integers(min_value=1, max_value=5),
)
rules = st.builds(
    ShapingRule,
    connections=st.integers(min_value=1, max_value=3),
    messages_per_connection=st.just(10),
    rate=st.none() | rates,
)
schedules = st.builds(
    WarmupSchedule,
    name=st.just("s"),
    per_day=st.lists(st.integers(min_value=0, max_value=8), min_size=1, max_size=4).map(tuple),
    providers=st.dictionaries(
        st.sampled_from([*PROVIDERS, "default"]),
        st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=3).map(tuple),
        max_size=2,
    ),
    advance_at=st.sampled_from([0.0, 0.5, 1.0]),
)
ips = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=4),
        st.sampled_from(list(IpState)),
        st.integers(min_value=1, max_value=3),
    ),
    min_size=1,
    max_size=4,
)
admit = st.tuples(st.just("admit"), st.integers(0, 3), st.integers(0, 2))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.floats(min_value=0.0, max_value=2.0)),
        st.tuples(st.just("jump"), st.floats(min_value=3600.0, max_value=DAY * 1.5)),
        admit,
        admit,
        admit,
        admit,
        st.tuples(st.just("refund"), st.integers(0, 50)),
        st.tuples(st.just("open"), st.integers(0, 2)),
        st.tuples(st.just("close"), st.integers(0, 50)),
    ),
    max_size=200,
)


class Oracle:
    """The warmup rule restated: an IP's schedule day on each UTC day, walked day by day from
    its start with what it sent (this process's share of the caps)."""

    def __init__(self, schedule: WarmupSchedule, start_day: int, share: float) -> None:
        self.schedule = schedule
        self.start = start_day
        self.share = share

    def days(self, first: int, sent: dict[int, int], last: int) -> dict[int, int]:
        """UTC day -> schedule day, from the start day to `last`."""
        out: dict[int, int] = {}
        day = first
        for utc in range(self.start, last + 1):
            out[utc] = day
            cap = self.schedule.total_cap(day)
            if cap is not None and sent.get(utc, 0) >= self.schedule.advance_at * cap * self.share:
                day += 1
        return out


@settings(max_examples=300, deadline=None)
@given(
    rules,
    st.dictionaries(st.sampled_from(PROVIDERS), rules, max_size=2),
    schedules,
    ips,
    ops,
    st.integers(min_value=1, max_value=4),
    st.sampled_from([0.25, 0.5, 1.0]),
    st.sampled_from([-3 * 3600.0, 3600.0, 3600.0]),
)
def test_never_over_a_cap_a_rate_or_a_connection_limit(
    default: ShapingRule,
    per_provider: dict[str, ShapingRule],
    schedule: WarmupSchedule,
    ip_specs: list[tuple[int, IpState, int]],
    operations: list[tuple[object, ...]],
    token_batch: int,
    share: float,
    start: float,
) -> None:
    sources = tuple(
        SourceIp(
            f"10.0.0.{i + 1}",
            "m.example",
            weight,
            state,
            WarmupAssignment("s", START, first + 1) if state == IpState.WARMING else None,
        )
        for i, (first, state, weight) in enumerate(ip_specs)
    )
    policy = Policy(
        pools=(PoolSpec("p", sources, (PlatformDomain("d.example"),)),),
        shaping=Shaping(default, per_provider),
        schedules={"s": schedule},
    )
    hold = 0.0 if token_batch == 1 else 0.01
    # Sessions here never renew their slots: leases that outlive the run.
    a = Admission(
        policy,
        LocalCounters(),
        share=share,
        token_batch=token_batch,
        token_hold=hold,
        slot_ttl=1e9,
    )
    oracle = Oracle(schedule, day_of(START), share)
    now = day_of(START) * DAY + start  # the day before the start at 21:00 UTC, or 01:00 on it
    sent: dict[tuple[int, str, str], list[float]] = defaultdict(list)  # (day, ip, rk) -> times
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    admitted: list[tuple[str, str, float]] = []
    sessions: list[tuple[str, str, str]] = []
    for n, op in enumerate(operations):
        kind = op[0]
        if kind in ("tick", "jump"):
            now += float(op[1])  # type: ignore[arg-type]
        elif kind == "admit":
            src = sources[int(op[1]) % len(sources)]  # type: ignore[call-overload]
            rk = PROVIDERS[int(op[2])]  # type: ignore[call-overload]
            d = drive(a.admit(src.address, rk, now))
            if d.ok:
                assert src.state != IpState.PAUSED
                admitted.append((src.address, rk, now))
                sent[(utc_day(now), src.address, rk)].append(now)
                times[(src.address, rk)].append(now)
            else:
                assert d.retry_at > now
        elif kind == "refund" and admitted:
            address, rk, at = admitted.pop(int(op[1]) % len(admitted))  # type: ignore[call-overload]
            drive(a.refund(address, rk, at))
            sent[(utc_day(at), address, rk)].pop()
        elif kind == "open":
            rk = PROVIDERS[int(op[1])]  # type: ignore[call-overload]
            c = drive(a.open_session("p", rk, f"h{n}", now))
            if c.source is not None:
                assert c.source.state != IpState.PAUSED
                sessions.append((c.source.address, rk, f"h{n}"))
                held = sum(1 for s in sessions if s[:2] == (c.source.address, rk))
                assert held <= a.rule(rk).connections
            else:
                assert c.retry_at > now
        elif kind == "close" and sessions:
            address, rk, holder = sessions.pop(int(op[1]) % len(sessions))  # type: ignore[call-overload]
            drive(a.close_session(address, rk, holder))

    # Rates: GCRA's bound on the admitted times, loosened only by tokens held in a batch.
    for (_, rk), ts in times.items():
        rate = a.rule(rk).rate
        if rate is None:
            continue
        slack = rate.tolerance + hold + 2 * EPSILON
        for j in range(len(ts)):
            for k in range(j + 1, len(ts)):
                assert ts[k] - ts[j] >= (k - j) * rate.interval - slack

    # Caps: per IP and UTC day, in total and per provider, by the warmup rule restated.
    by_day: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
    for (day, address, rk), ts in sent.items():
        by_day[(address, day)][rk] = len(ts)
    for src in sources:
        if src.state != IpState.WARMING or src.warmup is None:
            continue
        totals = {day: sum(v.values()) for (addr, day), v in by_day.items() if addr == src.address}
        walk = oracle.days(src.warmup.day, totals, max(totals, default=0))
        for day in sorted(totals):
            if day < day_of(START):
                assert totals[day] == 0
                continue
            sday = walk[day]
            total_cap = schedule.total_cap(sday)
            if total_cap is None:
                continue
            assert totals[day] <= int(total_cap * share)
            for rk, count in by_day[(src.address, day)].items():
                cap = schedule.provider_cap(sday, rk)
                if cap is not None:
                    assert count <= int(cap * share)


@settings(max_examples=200, deadline=None)
@given(
    schedules,
    st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=DAY / 3), st.integers(0, 2), st.booleans()),
        max_size=120,
    ),
    st.sampled_from([0.5, 1.0]),
)
def test_a_warming_ip_stays_under_its_caps_every_day(
    schedule: WarmupSchedule, asks: list[tuple[float, int, bool]], share: float
) -> None:
    src = SourceIp("10.0.0.1", "m.example", 1, IpState.WARMING, WarmupAssignment("s", START))
    policy = Policy(
        pools=(PoolSpec("p", (src,), (PlatformDomain("d.example"),)),), schedules={"s": schedule}
    )
    a = Admission(policy, LocalCounters(), share=share)
    now = day_of(START) * DAY
    sent: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for step, provider, refund in asks:
        now += step
        rk = PROVIDERS[provider]
        if drive(a.admit(src.address, rk, now)).ok:
            sent[utc_day(now)][rk] += 1
            if refund:  # admitted but never attempted
                drive(a.refund(src.address, rk, now))
                sent[utc_day(now)][rk] -= 1
    walk = Oracle(schedule, day_of(START), share).days(
        1, {d: sum(v.values()) for d, v in sent.items()}, max(sent, default=0)
    )
    for utc, by_provider in sent.items():
        total = schedule.total_cap(walk[utc])
        if total is None:
            continue
        assert sum(by_provider.values()) <= int(total * share)
        for rk, count in by_provider.items():
            cap = schedule.provider_cap(walk[utc], rk)
            assert cap is None or count <= int(cap * share)
