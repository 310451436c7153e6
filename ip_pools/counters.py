"""The `Counters` interface: the shared state behind admission, and its in-process version.

Four kinds of counter, all keyed by strings made by the key functions below (so every
implementation, the store's attempt log and the metrics agree on names):

- **rates** as GCRA (generic cell rate algorithm): per key a theoretical arrival time (TAT).
  `take_tokens(key, rate, want, now)` grants up to `want` tokens that conform *now* and
  advances the TAT by one interval per token. A caller may take a small batch and spend it
  over the next moments (admission does, with `token_batch` > 1, to save round trips to a
  remote implementation); spending a token late can only make a burst of at most the tokens
  held, which is why batches stay small and are dropped after `token_hold` seconds.
- **connection slots** as leases: `acquire_slot(key, limit, holder, ttl, now)` succeeds while
  fewer than `limit` unexpired leases are held; the holder renews by acquiring again and ends
  with `release_slot`. A crashed holder's slot frees itself after `ttl`.
- **daily counts**: `add_count(key, n, cap, expires_at)` adds up to `n` without going over
  `cap` and returns what it added (a negative `n` gives back units taken but not used).
  `seed_counts` raises counts to at least the store's figures after a restart.
- **pauses**: `pause(key, until)`; `paused_until(keys, now)` is the latest pause among keys.

Every method is a coroutine so that a remote implementation (Redis, GCRA and leases as Lua
scripts) fits the same seam; `LocalCounters` never suspends, so awaiting it costs a
coroutine call and no I/O. Decisions are made by `ip_pools.admission.Admission`, which keeps
what it took locally so that most decisions need no call here at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ip_pools.rates import Rate

# A float-safe margin for "conforms now": a token due within a microsecond conforms (POSIX
# times near 2e9 carry about 0.2 microseconds of float precision).
EPSILON = 1e-6
ANY_PROVIDER = "*"


def rate_key(ip: str, route_key: str) -> str:
    return f"rate:{ip}:{route_key}"


def count_key(day: int, ip: str, route_key: str = ANY_PROVIDER) -> str:
    """The key of what `ip` sent on UTC day `day` to `route_key` ("*": to every provider)."""
    return f"day:{day}:{ip}:{route_key}"


def slot_key(ip: str, route_key: str) -> str:
    return f"conn:{ip}:{route_key}"


def pause_key(ip: str, route_key: str = ANY_PROVIDER) -> str:
    """The key of a pause of `ip` for `route_key` ("*": for every provider)."""
    return f"pause:{ip}:{route_key}"


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """`granted` tokens conform now; `retry_at` is when the next one will."""

    granted: int
    retry_at: float


@runtime_checkable
class Counters(Protocol):
    """Shared counters (see the module docstring for the semantics of each)."""

    async def take_tokens(self, key: str, rate: Rate, want: int, now: float) -> TokenGrant:
        """Take up to `want` tokens that conform at `now` (GCRA); never more than the burst."""

    async def next_token(self, key: str, rate: Rate, now: float) -> float:
        """When the next token conforms (`now` or earlier when one does now); takes none."""

    async def add_count(self, key: str, n: int, cap: int | None, expires_at: float) -> int:
        """Add up to `n` to the count without passing `cap` (None: no cap); return what was
        added. A negative `n` subtracts (never below 0). The key may be forgotten after
        `expires_at`."""

    async def counts(self, keys: Sequence[str]) -> list[int]:
        """The current counts of `keys` (0 for an unknown key)."""

    async def seed_counts(self, counts: Mapping[str, int], expires_at: float) -> None:
        """Raise each count to at least the given value (restart: the store's counts)."""

    async def acquire_slot(self, key: str, limit: int, holder: str, ttl: float, now: float) -> bool:
        """Hold (or renew) one of `limit` slots under `holder` until `now + ttl`."""

    async def release_slot(self, key: str, holder: str) -> None:
        """Give the holder's slot back (no error when it is not held)."""

    async def slots_held(self, key: str, now: float) -> int:
        """How many unexpired slots are held."""

    async def pause(self, key: str, until: float) -> None:
        """Pause `key` until `until` (an earlier `until` than a pause in force shortens it)."""

    async def paused_until(self, keys: Sequence[str], now: float) -> float:
        """The latest end of a pause in force among `keys`; 0.0 when none is."""


def gcra_take(
    tat: float | None, rate: Rate, want: int, now: float
) -> tuple[float | None, TokenGrant]:
    """Pure GCRA: (new TAT, grant) for a take of up to `want` tokens at `now`.

    Token i (from 0) of a take conforms at `max(tat, now) + i*T - tau`; the tokens granted are
    those that conform at `now`. Shared by every implementation (a Lua script mirrors it).
    """
    interval, tau = rate.interval, rate.tolerance
    base = now if tat is None or tat < now else tat
    ahead = now - base + tau + EPSILON  # seconds by which token 0 conforms
    allowed = 0 if ahead < 0 else math.floor(ahead / interval) + 1
    granted = max(0, min(want, allowed))
    if granted:
        tat = base + granted * interval
        base = tat
    return tat, TokenGrant(granted, max(now, base - tau))


class LocalCounters:
    """`Counters` in this process's memory: exact, never suspends, shared by nothing else.

    With several worker processes on one node each has its own, so admission divides the
    limits between them (see `Admission`'s `share`).
    """

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._count_expiry: dict[str, float] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._pauses: dict[str, float] = {}

    async def take_tokens(self, key: str, rate: Rate, want: int, now: float) -> TokenGrant:
        tat, grant = gcra_take(self._tat.get(key), rate, want, now)
        if tat is not None:
            self._tat[key] = tat
            if len(self._tat) > 10_000:
                self._forget_rates(now)
        return grant

    async def next_token(self, key: str, rate: Rate, now: float) -> float:
        _, grant = gcra_take(self._tat.get(key), rate, 0, now)
        return grant.retry_at if grant.retry_at > now else now

    def _forget_rates(self, now: float) -> None:
        # A TAT in the past is the same as none: the key is idle.
        for key in [k for k, t in self._tat.items() if t <= now]:
            del self._tat[key]

    async def add_count(self, key: str, n: int, cap: int | None, expires_at: float) -> int:
        have = self._counts.get(key, 0)
        if n < 0:
            n = max(n, -have)
        elif cap is not None:
            n = max(0, min(n, cap - have))
        if n:
            self._counts[key] = have + n
            self._count_expiry[key] = max(expires_at, self._count_expiry.get(key, 0.0))
        return n

    async def counts(self, keys: Sequence[str]) -> list[int]:
        return [self._counts.get(k, 0) for k in keys]

    async def seed_counts(self, counts: Mapping[str, int], expires_at: float) -> None:
        for key, value in counts.items():
            if value > self._counts.get(key, 0):
                self._counts[key] = value
                self._count_expiry[key] = max(expires_at, self._count_expiry.get(key, 0.0))

    def forget_counts(self, now: float) -> None:
        """Drop counts past their expiry (called now and then by their owner)."""
        for key in [k for k, t in self._count_expiry.items() if t <= now]:
            del self._count_expiry[key]
            self._counts.pop(key, None)

    async def acquire_slot(self, key: str, limit: int, holder: str, ttl: float, now: float) -> bool:
        held = self._slots.setdefault(key, {})
        if holder not in held:
            for h in [h for h, t in held.items() if t <= now]:
                del held[h]
            if len(held) >= limit:
                return False
        held[holder] = now + ttl
        return True

    async def release_slot(self, key: str, holder: str) -> None:
        held = self._slots.get(key)
        if held is not None:
            held.pop(holder, None)
            if not held:
                del self._slots[key]

    async def slots_held(self, key: str, now: float) -> int:
        held = self._slots.get(key)
        return 0 if not held else sum(1 for t in held.values() if t > now)

    async def pause(self, key: str, until: float) -> None:
        self._pauses[key] = until

    async def paused_until(self, keys: Sequence[str], now: float) -> float:
        latest = 0.0
        for key in keys:
            until = self._pauses.get(key)
            if until is not None:
                if until <= now:
                    del self._pauses[key]
                elif until > latest:
                    latest = until
        return latest
