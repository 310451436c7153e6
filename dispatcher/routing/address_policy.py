"""Which addresses an MX or A/AAAA answer may lead the dispatcher to.

A recipient domain is chosen by whoever enqueues the mail, and its DNS by whoever owns the
domain: an MX pointing at 127.0.0.1, 10.x, 169.254.169.254 (a cloud's metadata service) or
a multicast group would make the engine connect inside its own network. Such answers are
skipped: only globally routable addresses (`ipaddress.is_global`, judged on the IPv4
address inside IPv4-mapped, NAT64 `64:ff9b::/96` and 6to4 forms) are dialled, unless an
operator listed the network in `[routing] allow_private`. `0.0.0.0` and `::` (which reach
the local host) are never dialled. `[routes]` overrides are the operator's own and are not
checked here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded(ip: Address) -> Address:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), else `ip`."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


class AddressPolicy:
    """Decides, per address, whether MX answers may lead there; `allow` lists the
    non-global networks an operator opened ([routing] allow_private)."""

    def __init__(self, allow: Iterable[Network] = ()) -> None:
        self._allow = tuple(allow)

    def refusal(self, address: str) -> str | None:
        """Why `address` must not be dialled, or None when it may."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return f"{address!r} is not an IP address"
        inner = embedded(ip)
        if ip.is_unspecified or inner.is_unspecified:
            return f"{address} is the unspecified address"
        for candidate in {ip, inner}:
            if any(candidate.version == net.version and candidate in net for net in self._allow):
                return None
        # An embedded IPv4 address is judged alone: 64:ff9b::7f00:1 is 127.0.0.1.
        if inner.is_global and not inner.is_multicast:
            return None
        return f"{address} is not globally routable ({_kind(inner)})"

    def split(self, addresses: Iterable[str]) -> tuple[tuple[str, ...], list[str]]:
        """(addresses that may be dialled, in order; reasons for those skipped)."""
        kept: list[str] = []
        reasons: list[str] = []
        for a in addresses:
            why = self.refusal(a)
            if why is None:
                kept.append(a)
            else:
                reasons.append(why)
        return tuple(kept), reasons


def _kind(ip: Address) -> str:
    for name in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{name}", False):
            return name.replace("_", "-")
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "shared address space"
    return "not global"
