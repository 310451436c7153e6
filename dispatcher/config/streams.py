"""`[streams.transactional]`, `[streams.broadcast]`: per-stream age limit and ambiguity policy."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table
from dispatcher.config.values import parse_duration


class Ambiguous(enum.StrEnum):
    """What happens to a message whose outcome is unknowable (no reply after the dot)."""

    HOLD = "hold"  # kept, never resent (the delivery promise's default)
    RETRY = "retry"
    RELEASE = "release"  # "release:DURATION": held, then queued again after DURATION


@dataclass(frozen=True, slots=True)
class StreamConfig:
    name: str
    max_age: float
    ambiguous: Ambiguous = Ambiguous.HOLD
    require_unsubscribe: bool = False
    release_after: float | None = None  # with Ambiguous.RELEASE: how long a message is held


# The streams there are, with their defaults.
STREAM_DEFAULTS: Mapping[str, StreamConfig] = {
    "transactional": StreamConfig("transactional", max_age=86400.0),
    "broadcast": StreamConfig("broadcast", max_age=3 * 86400.0, require_unsubscribe=True),
}
_KEYS = ("max_age", "ambiguous", "require_unsubscribe")

SECTION = Section("streams", ())
STREAM_SECTIONS = tuple(Section(f"streams.{name}", _KEYS) for name in STREAM_DEFAULTS)


def parse_streams(t: Table) -> dict[str, StreamConfig]:
    streams: dict[str, StreamConfig] = {}
    for section in STREAM_SECTIONS:
        base = STREAM_DEFAULTS[section.name]
        st = t.table(section)
        ambiguous, release_after = _ambiguous(st, base.ambiguous)
        streams[base.name] = replace(
            base,
            max_age=st.duration("max_age", base.max_age),
            ambiguous=ambiguous,
            release_after=release_after,
            require_unsubscribe=st.flag("require_unsubscribe", base.require_unsubscribe),
        )
        st.done()
    t.done()
    return streams


def _ambiguous(st: Table, default: Ambiguous) -> tuple[Ambiguous, float | None]:
    """`"hold"`, `"retry"` or `"release:DURATION"`."""
    v = st.raw("ambiguous", default.value)
    if isinstance(v, str) and v.strip().startswith(f"{Ambiguous.RELEASE.value}:"):
        after = parse_duration(v.split(":", 1)[1], st.key("ambiguous"))
        if after <= 0:
            raise ConfigError(field=st.key("ambiguous"), reason="release delay must be positive")
        return Ambiguous.RELEASE, after
    if v == Ambiguous.RELEASE.value:
        raise ConfigError(
            field=st.key("ambiguous"), reason='needs a delay: "release:DURATION" (e.g. 6h)'
        )
    if v not in (Ambiguous.HOLD.value, Ambiguous.RETRY.value):
        raise ConfigError(
            field=st.key("ambiguous"),
            reason=f'must be "hold", "retry" or "release:DURATION"; got {v!r}',
        )
    return Ambiguous(v), None
