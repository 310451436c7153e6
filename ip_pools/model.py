"""Where mail leaves from: source IPs, platform sending domains and the pools that group them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceIp:
    """A source address the sending sockets bind, with its EHLO name and rotation weight."""

    address: str
    ehlo: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class PlatformDomain:
    """A platform sending domain: the VERP return path and the optional second DKIM signature."""

    domain: str
    weight: int = 1
    sign: bool = True


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A named pool: IPs and platform domains rotated by weight."""

    name: str
    ips: tuple[SourceIp, ...]
    domains: tuple[PlatformDomain, ...]


@dataclass(frozen=True, slots=True)
class Pick:
    """The answer to "from where may this message go now?"."""

    pool: str
    source: SourceIp
    domain: PlatformDomain
