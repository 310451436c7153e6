"""Warmup schedules: how much a warming IP may send per UTC day, in total and per provider.

An IP's schedule day is kept in the store as `WarmupProgress` (the day and the UTC day it
applies to). On a new UTC day it advances by one only if, on the day recorded, the IP sent at
least `advance_at` of that day's cap (MailerQ's rule): a quiet day does not count. When the
schedule's last day is passed, the IP is warm: `warming` becomes `active`.
Days are UTC day numbers: `int(posix_seconds // 86400)`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

DAY = 86400.0
DEFAULT_PROVIDER = "default"  # per-provider caps for every provider not listed


def utc_day(now: float) -> int:
    """The UTC day number of a POSIX time."""
    return int(now // DAY)


def next_utc_day(now: float) -> float:
    """The POSIX time of the next UTC midnight."""
    return (utc_day(now) + 1) * DAY


def day_of(date: dt.date) -> int:
    """The UTC day number of a calendar date."""
    return (date - dt.date(1970, 1, 1)).days


@dataclass(frozen=True, slots=True)
class WarmupSchedule:
    """Caps per schedule day (day 1 is `per_day[0]`), optional per-provider caps on top."""

    name: str
    per_day: tuple[int, ...]
    providers: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    advance_at: float = 0.5

    @property
    def days(self) -> int:
        return len(self.per_day)

    def total_cap(self, day: int) -> int | None:
        """The IP's cap on schedule day `day` (1-based); None once the schedule is done."""
        return self.per_day[day - 1] if 1 <= day <= len(self.per_day) else None

    def provider_cap(self, day: int, route_key: str) -> int | None:
        """The per-provider cap on `day`, None when the provider has none that day."""
        caps = self.providers.get(route_key)
        if caps is None:
            caps = self.providers.get(DEFAULT_PROVIDER)
        if caps is None or not 1 <= day <= len(caps) or day > len(self.per_day):
            return None
        return caps[day - 1]


@dataclass(frozen=True, slots=True)
class WarmupAssignment:
    """An IP on a schedule: from `started` (a UTC date), at schedule day `day` then."""

    schedule: str
    started: dt.date
    day: int = 1


@dataclass(frozen=True, slots=True)
class WarmupProgress:
    """Schedule day `day` applies on UTC day `on`."""

    day: int
    on: int


def initial_progress(assignment: WarmupAssignment) -> WarmupProgress:
    """Where an IP with no stored history is: its configured day, on its start date (the days
    since then count by the same rule, as days on which it sent nothing)."""
    return WarmupProgress(day=assignment.day, on=day_of(assignment.started))


def advance(
    progress: WarmupProgress, schedule: WarmupSchedule, today: int, sent_on: int
) -> WarmupProgress:
    """The progress on `today`, given `sent_on`: what the IP sent on UTC day `progress.on`.

    The days between `progress.on` and `today` sent nothing: they count only where nothing is
    enough (`advance_at` 0 or a cap of 0).
    """
    if today <= progress.on:
        return progress
    day = progress.day
    sent = sent_on
    for _ in range(min(today - progress.on, schedule.days + 1)):
        cap = schedule.total_cap(day)
        if cap is None or sent < schedule.advance_at * cap:
            break  # and the quiet days after it cannot count either
        day += 1
        sent = 0  # the days after `progress.on` sent nothing
    return WarmupProgress(day=day, on=today)


def complete(progress: WarmupProgress, schedule: WarmupSchedule) -> bool:
    """True once the schedule is done (the IP is warm)."""
    return progress.day > schedule.days
