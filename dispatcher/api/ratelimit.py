"""Per-key rate limits (GCRA), with the numbers for the RateLimit-* and Retry-After headers.

In-process: each API process limits on its own (N processes allow N times the rate).
The table is bounded: idle keys are forgotten first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    """`allowed`, and what the response headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset: float  # seconds until the bucket is full again
    retry_after: float  # seconds until one request is allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        h = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset)),
        }
        if not self.allowed:
            h["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return h


class RateLimiter:
    """GCRA: `rate` requests per second sustained, `burst` at once, per key."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._tat: OrderedDict[str, float] = OrderedDict()  # theoretical arrival times
        self._max_keys = max_keys

    def take(self, key: str, now: float | None = None) -> Verdict:
        """Count one request of `key`."""
        now = time.monotonic() if now is None else now
        tat = max(self._tat.get(key, now), now)
        allow_at = tat - self._tolerance
        if now + 1e-9 < allow_at:
            remaining = 0
            return Verdict(False, self.burst, remaining, tat - now, allow_at - now)
        new_tat = tat + self._interval
        self._tat[key] = new_tat
        self._tat.move_to_end(key)
        if len(self._tat) > self._max_keys:
            self._tat.popitem(last=False)
        remaining = math.floor((self._tolerance - (new_tat - now)) / self._interval + 1e-9) + 1
        return Verdict(True, self.burst, max(0, min(self.burst, remaining)), new_tat - now, 0.0)
