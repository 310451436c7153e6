"""`[streams.transactional]`, `[streams.broadcast]`: per-stream age limit and ambiguity policy."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from dispatcher.config.table import Section, Table


class Ambiguous(enum.StrEnum):
    """What happens to a message whose outcome is unknowable (no reply after the dot)."""

    HOLD = "hold"  # kept, never resent (the delivery promise's default)
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class StreamConfig:
    name: str
    max_age: float
    ambiguous: Ambiguous = Ambiguous.HOLD
    require_unsubscribe: bool = False


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
        streams[base.name] = replace(
            base,
            max_age=st.duration("max_age", base.max_age),
            ambiguous=st.choice("ambiguous", base.ambiguous),
            require_unsubscribe=st.flag("require_unsubscribe", base.require_unsubscribe),
        )
        st.done()
    t.done()
    return streams
