"""Where mail leaves from: source IPs, platform sending domains and the pools that group them."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ip_pools.warmup import WarmupAssignment


class IpState(enum.StrEnum):
    """An IP's (or platform domain's) configured state. `warming` IPs follow their warmup
    schedule's caps and are `active` once it is done; `draining` ones take no new mail (their
    queued and waiting mail goes out through the others); `paused` ones open no sessions and
    their mail waits."""

    ACTIVE = "active"
    WARMING = "warming"
    DRAINING = "draining"
    PAUSED = "paused"


SENDING_STATES = frozenset({IpState.ACTIVE, IpState.WARMING})


@dataclass(frozen=True, slots=True)
class SourceIp:
    """A source address the sending sockets bind, with its EHLO name and weight."""

    address: str
    ehlo: str
    weight: int = 1
    state: IpState = IpState.ACTIVE
    warmup: WarmupAssignment | None = None


@dataclass(frozen=True, slots=True)
class PlatformDomain:
    """A platform sending domain: the VERP return path and the optional second DKIM signature."""

    domain: str
    weight: int = 1
    sign: bool = True
    state: IpState = IpState.ACTIVE


OVERFLOW_WAIT = "wait"


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A named pool: IPs and platform domains rotated by weight.

    `overflow` is where mail goes when no IP of this pool has room: "wait", or another pool's
    name (written `pool:NAME` in config). A `probation` pool never overflows into one that is
    not (new accounts must not burn warm IPs).
    """

    name: str
    ips: tuple[SourceIp, ...]
    domains: tuple[PlatformDomain, ...]
    overflow: str = OVERFLOW_WAIT
    probation: bool = False


@dataclass(frozen=True, slots=True)
class Pick:
    """The answer to "from where may this message go now?"."""

    pool: str
    source: SourceIp
    domain: PlatformDomain
