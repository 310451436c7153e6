"""`[routing]`: which non-global addresses an MX or A/AAAA answer may lead to."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    # MX answers pointing at loopback, private, link-local, multicast or reserved addresses
    # are skipped unless inside one of these networks ([routes] overrides always go).
    allow_private: tuple[Network, ...] = ()


SECTION = Section("routing", ("allow_private",))


def parse_routing(t: Table) -> RoutingConfig:
    raw = t.raw("allow_private", [])
    if not isinstance(raw, list):
        raise ConfigError(field=t.key("allow_private"), reason="expected a list of networks")
    nets: list[Network] = []
    for i, value in enumerate(raw):
        key = f"{t.key('allow_private')}[{i}]"
        if not isinstance(value, str):
            raise ConfigError(field=key, reason="expected a network such as 10.1.0.0/16")
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConfigError(field=key, reason=f"not a network: {value!r}") from None
        if net.network_address.is_unspecified:
            raise ConfigError(field=key, reason="0.0.0.0 and :: are never allowed")
        nets.append(net)
    routing = RoutingConfig(allow_private=tuple(nets))
    t.done()
    return routing
