"""Warmup schedules, the day advance rule and completion (ip_pools/warmup.py)."""

from __future__ import annotations

import datetime as dt

from ip_pools.warmup import (
    WarmupAssignment,
    WarmupProgress,
    WarmupSchedule,
    advance,
    complete,
    day_of,
    initial_progress,
    next_utc_day,
    utc_day,
)

STANDARD = WarmupSchedule(
    "standard", (50, 100, 200), {"google": (20, 40), "default": (30,)}, advance_at=0.5
)


def test_caps_per_day_and_per_provider() -> None:
    assert STANDARD.total_cap(1) == 50
    assert STANDARD.total_cap(3) == 200
    assert STANDARD.total_cap(4) is None
    assert STANDARD.provider_cap(1, "google") == 20
    assert STANDARD.provider_cap(2, "google") == 40
    assert STANDARD.provider_cap(3, "google") is None  # past the provider's list
    assert STANDARD.provider_cap(1, "yahoo") == 30  # the default for unlisted providers
    assert STANDARD.provider_cap(2, "yahoo") is None


def test_a_day_counts_only_when_enough_was_sent() -> None:
    p = WarmupProgress(day=1, on=100)
    assert advance(p, STANDARD, 100, 0) == p  # same day: nothing changes
    assert advance(p, STANDARD, 101, 24) == WarmupProgress(1, 101)  # under half of 50
    assert advance(p, STANDARD, 101, 25) == WarmupProgress(2, 101)
    # Days without sending in between do not count either.
    assert advance(p, STANDARD, 105, 50) == WarmupProgress(2, 105)


def test_completion_after_the_last_day() -> None:
    p = WarmupProgress(day=3, on=7)
    assert not complete(p, STANDARD)
    done = advance(p, STANDARD, 8, 100)
    assert done == WarmupProgress(4, 8)
    assert complete(done, STANDARD)
    assert advance(done, STANDARD, 9, 0) == WarmupProgress(4, 9)  # stays warm


def test_initial_progress_starts_at_the_configured_day_not_before_the_start() -> None:
    a = WarmupAssignment("standard", dt.date(2026, 12, 1), day=2)
    start = day_of(dt.date(2026, 12, 1))
    assert initial_progress(a) == WarmupProgress(2, start)
    # Quiet days count only where nothing is enough.
    assert advance(initial_progress(a), STANDARD, start + 5, 0) == WarmupProgress(2, start + 5)
    timed = WarmupSchedule("timed", (50, 100, 0, 10), advance_at=0.0)
    assert advance(WarmupProgress(1, start), timed, start + 2, 0) == WarmupProgress(3, start + 2)
    assert advance(WarmupProgress(1, start), timed, start + 9, 0) == WarmupProgress(5, start + 9)
    zero = WarmupSchedule("zero", (10, 0, 0, 10), advance_at=0.5)
    assert advance(WarmupProgress(1, start), zero, start + 3, 5) == WarmupProgress(4, start + 3)
    assert advance(WarmupProgress(1, start), zero, start + 3, 4) == WarmupProgress(1, start + 3)


def test_utc_days() -> None:
    t = dt.datetime(2026, 12, 1, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    assert utc_day(t) == day_of(dt.date(2026, 12, 1))
    assert next_utc_day(t) == dt.datetime(2026, 12, 2, tzinfo=dt.UTC).timestamp()
