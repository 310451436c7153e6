"""`[warmup]`, `[[warmup.schedules]]`: how much a warming IP may send per UTC day.

The types and the day rule are `ip_pools.warmup`'s own; this reads and checks the table.
"""

from __future__ import annotations

from collections.abc import Set

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table, field_default
from ip_pools.warmup import DEFAULT_PROVIDER, WarmupSchedule

SECTION = Section("warmup", ())
SCHEDULE_SECTION = Section("warmup.schedules[]", ("name", "per_day", "providers", "advance_at"))


def parse_warmup(t: Table, providers: Set[str]) -> dict[str, WarmupSchedule]:
    schedules: dict[str, WarmupSchedule] = {}
    for st in t.tables(SCHEDULE_SECTION):
        schedule = _parse_schedule(st, providers)
        if schedule.name in schedules:
            raise ConfigError(
                field=st.key("name"), reason=f"schedule {schedule.name!r} is declared twice"
            )
        schedules[schedule.name] = schedule
    t.done()
    return schedules


def _parse_schedule(t: Table, providers: Set[str]) -> WarmupSchedule:
    name = t.text("name", required=True)
    if not name:
        raise ConfigError(field=t.key("name"), reason="is required")
    per_day = _caps(t.raw("per_day"), t.key("per_day"))
    caps_raw = t.raw("providers", {})
    if not isinstance(caps_raw, dict):
        raise ConfigError(
            field=t.key("providers"), reason="expected a table such as { google = [20, 40] }"
        )
    caps: dict[str, tuple[int, ...]] = {}
    for provider, value in caps_raw.items():
        where = f"{t.key('providers')}.{provider}"
        if provider != DEFAULT_PROVIDER and provider not in providers:
            raise ConfigError(field=where, reason=f"no [[providers]] entry named {provider!r}")
        caps[provider] = _caps(value, where)
    advance_at = t.number("advance_at", field_default(WarmupSchedule, "advance_at"))
    if not 0.0 <= advance_at <= 1.0:
        raise ConfigError(field=t.key("advance_at"), reason="expected a share from 0 to 1")
    t.done()
    return WarmupSchedule(name=name, per_day=per_day, providers=caps, advance_at=advance_at)


def _caps(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            field=where, reason="expected a non-empty list of daily caps (day 1, day 2, ...)"
        )
    for i, cap in enumerate(value):
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ConfigError(
                field=f"{where}[{i}]", reason=f"expected a whole number of messages, got {cap!r}"
            )
    return tuple(value)
