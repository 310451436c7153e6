"""The in-process counters: GCRA rates, slot leases, daily counts, pauses (ip_pools/counters.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ip_pools import Counters, LocalCounters, Rate
from ip_pools.counters import EPSILON, gcra_take
from tests.support.drive import drive

rates = st.builds(
    Rate,
    count=st.integers(min_value=1, max_value=600).map(float),
    per=st.sampled_from([1.0, 60.0, 3600.0]),
    burst=st.integers(min_value=1, max_value=8),
)
# (time step in units of the rate's interval, tokens wanted)
steps = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=3.0), st.integers(min_value=0, max_value=10)),
    min_size=1,
    max_size=120,
)


def conforms(times: list[float], rate: Rate) -> bool:
    """GCRA's promise: any k+1 tokens span at least k intervals minus the tolerance."""
    slack = rate.tolerance + EPSILON * 2
    return all(
        times[k] - times[j] >= (k - j) * rate.interval - slack
        for j in range(len(times))
        for k in range(j + 1, min(len(times), j + rate.burst + 40))
    )


@settings(max_examples=200)
@given(rates, steps)
def test_tokens_never_exceed_the_rate_whatever_the_asks(
    rate: Rate, asks: list[tuple[float, int]]
) -> None:
    c = LocalCounters()
    now = 1_000_000.0
    times: list[float] = []
    for step, want in asks:
        now += step * rate.interval
        grant = drive(c.take_tokens("k", rate, want, now))
        assert 0 <= grant.granted <= min(want, rate.burst)
        times += [now] * grant.granted
        if grant.granted < want:
            assert grant.retry_at > now - EPSILON
            # Exactly then, one more conforms (the retry time is not a guess).
            probe = LocalCounters()
            probe._tat = dict(c._tat)
            assert drive(probe.take_tokens("k", rate, 1, grant.retry_at)).granted == 1
    assert conforms(times, rate)


@given(rates, st.floats(min_value=0.0, max_value=100.0))
def test_an_idle_key_gives_its_burst_at_once_then_one_per_interval(rate: Rate, idle: float) -> None:
    c = LocalCounters()
    now = 5000.0 + idle
    assert drive(c.take_tokens("k", rate, 100, now)).granted == rate.burst
    grant = drive(c.take_tokens("k", rate, 1, now))
    assert grant.granted == 0
    assert abs(grant.retry_at - (now + rate.interval)) < 1e-6 * max(1.0, rate.interval)
    assert drive(c.next_token("k", rate, now)) == grant.retry_at
    assert drive(c.take_tokens("k", rate, 5, grant.retry_at)).granted == 1


def test_gcra_is_pure() -> None:
    r = Rate(60, 60.0, 2)
    tat, g = gcra_take(None, r, 3, 10.0)
    assert g.granted == 2 and tat == 12.0 and g.retry_at == 11.0


def test_slots_are_leases() -> None:
    c = LocalCounters()
    assert isinstance(c, Counters)
    assert drive(c.acquire_slot("s", 2, "a", 10.0, 0.0))
    assert drive(c.acquire_slot("s", 2, "b", 10.0, 0.0))
    assert not drive(c.acquire_slot("s", 2, "c", 10.0, 1.0))
    assert drive(c.acquire_slot("s", 2, "a", 10.0, 5.0))  # a holder renews its own
    assert drive(c.slots_held("s", 5.0)) == 2
    drive(c.release_slot("s", "b"))
    assert drive(c.acquire_slot("s", 2, "c", 10.0, 6.0))
    # a's lease (renewed at 5) runs out at 15: its slot frees itself.
    assert not drive(c.acquire_slot("s", 2, "d", 10.0, 14.0))
    assert drive(c.acquire_slot("s", 2, "d", 10.0, 15.5))
    drive(c.release_slot("nothing", "x"))


def test_counts_never_pass_the_cap() -> None:
    c = LocalCounters()
    assert drive(c.add_count("d", 3, 5, 100.0)) == 3
    assert drive(c.add_count("d", 3, 5, 100.0)) == 2
    assert drive(c.add_count("d", 1, 5, 100.0)) == 0
    assert drive(c.add_count("d", -10, None, 100.0)) == -5
    assert drive(c.counts(["d", "unknown"])) == [0, 0]
    drive(c.seed_counts({"d": 4, "e": 2}, 100.0))
    drive(c.seed_counts({"d": 1}, 100.0))  # seeding never lowers a count
    assert drive(c.counts(["d", "e"])) == [4, 2]
    c.forget_counts(100.0)
    assert drive(c.counts(["d", "e"])) == [0, 0]


def test_pauses() -> None:
    c = LocalCounters()
    drive(c.pause("p1", 50.0))
    drive(c.pause("p2", 80.0))
    assert drive(c.paused_until(["p1", "p2", "p3"], 10.0)) == 80.0
    assert drive(c.paused_until(["p1"], 60.0)) == 0.0
    drive(c.pause("p2", 20.0))  # shortened
    assert drive(c.paused_until(["p2"], 30.0)) == 0.0
