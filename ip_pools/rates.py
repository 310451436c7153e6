"""Rates as operators write them: "300/min", "10/s", "1,000/h", "20_000/d", with ",burst=N".

A `Rate` is enforced as GCRA (the generic cell rate algorithm): one message every
`interval` seconds, with up to `burst` messages at once after an idle spell. The default burst
is 1 (evenly spaced), which is what a provider counting per minute sees as smoothest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
# 1000, 1,000 (groups of three), 20_000, 2.5
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+|\d+(?:_\d+)*(?:\.\d+)?")


class RateSyntaxError(ValueError):
    """A rate that cannot be read; the message says what is expected."""

    code = "invalid_rate"


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` messages per `per` seconds, `burst` of them at once at most."""

    count: float
    per: float
    burst: int = 1

    @property
    def interval(self) -> float:
        """Seconds between two messages at the steady rate (GCRA's emission interval T)."""
        return self.per / self.count

    @property
    def tolerance(self) -> float:
        """GCRA's tau: how far ahead of schedule a message may be, from the burst."""
        return self.interval * (self.burst - 1)

    @property
    def per_minute(self) -> float:
        return self.count * 60.0 / self.per

    def __str__(self) -> str:
        count = int(self.count) if self.count == int(self.count) else self.count
        unit = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "d"}.get(self.per, f"{self.per}s")
        tail = f",burst={self.burst}" if self.burst != 1 else ""
        return f"{count}/{unit}{tail}"


def parse_rate(text: str) -> Rate:
    """Read a rate; RateSyntaxError says what is wrong."""
    if not isinstance(text, str):
        raise RateSyntaxError(f"expected a rate such as 300/min, got {text!r}")
    head, sep, tail = text.strip().partition("/")
    if not sep:
        raise RateSyntaxError(f"expected COUNT/UNIT such as 300/min, got {text!r}")
    number = head.strip()
    if not _NUMBER.fullmatch(number):
        raise RateSyntaxError(f"not a count: {number!r} (write 1000, 1,000 or 1_000)")
    count = float(number.replace(",", "").replace("_", ""))
    if not count > 0 or not math.isfinite(count):
        raise RateSyntaxError("the count must be above 0")
    unit, *options = (part.strip() for part in tail.split(","))
    per = _UNITS.get(unit.lower())
    if per is None:
        raise RateSyntaxError(f"unknown unit {unit!r}: use s, min, h or d")
    burst = 1
    for option in options:
        name, eq, value = option.partition("=")
        if name.strip() != "burst" or not eq or not value.strip().isdigit():
            raise RateSyntaxError(f"unknown option {option!r}: only burst=N")
        burst = int(value)
        if burst < 1:
            raise RateSyntaxError("burst must be at least 1")
    return Rate(count=count, per=per, burst=burst)
