"""What the store keeps for deliverability beside the attempt log (`Queue.attempts`,
`protocol.AttemptRecord`): daily counts per (source IP, provider, UTC day), warmup progress
per IP, and the claim's provider filter.

The store knows providers only as route keys (strings); what they mean is ip_pools' business.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClaimSkip:
    """A claim leaves out waiting messages whose stored provider is `provider` (only those of
    `stream` when given): the provider cannot take mail now, or its ready queue is full."""

    provider: str
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class WarmupRecord:
    """A warming IP's progress: schedule day `day` applies on UTC day `on_day`."""

    address: str
    schedule: str
    day: int
    on_day: int


def utc_day(t: float) -> int:
    """The UTC day number of a POSIX time (as ip_pools.warmup.utc_day)."""
    return int(t // 86400)
