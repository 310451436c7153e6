"""`[[pools]]`, `[[pools.ips]]`, `[[pools.domains]]`: where mail leaves from.

The types are `ip_pools`' own (`PoolSpec`, `SourceIp`, `PlatformDomain`); their defaults live there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Set

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table, field_default
from dispatcher.config.values import check_domain
from ip_pools.model import PlatformDomain, PoolSpec, SourceIp

SECTION = Section("pools[]", ("name",))
IP_SECTION = Section("pools[].ips[]", ("address", "ehlo", "weight", "state"))
DOMAIN_SECTION = Section("pools[].domains[]", ("domain", "weight", "sign", "state"))


def parse_pools(top: Table, key_domains: Set[str]) -> tuple[PoolSpec, ...]:
    """Every pool; `key_domains` are the domains with a `[[dkim.keys]]` entry."""
    pools = tuple(_parse_pool(pt, key_domains) for pt in top.tables(SECTION))
    if not pools:
        raise ConfigError(field="pools", reason="at least one [[pools]] entry is required")
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise ConfigError(field="pools", reason="pool names must be unique")
    return pools


def _parse_pool(t: Table, key_domains: Set[str]) -> PoolSpec:
    name = t.text("name", required=True)
    ips = tuple(_parse_ip(it) for it in t.tables(IP_SECTION))
    if not ips:
        raise ConfigError(field=t.key("ips"), reason="a pool needs at least one source IP")
    if len({ip.address for ip in ips}) != len(ips):
        raise ConfigError(field=t.key("ips"), reason="the same address is listed twice")
    doms = tuple(_parse_domain(dt, key_domains) for dt in t.tables(DOMAIN_SECTION))
    if not doms:
        raise ConfigError(
            field=t.key("domains"), reason="a pool needs at least one platform sending domain"
        )
    if not any(i.weight for i in ips):
        raise ConfigError(
            field=t.key("ips"), reason="at least one source IP needs a weight above 0"
        )
    if not any(d.weight for d in doms):
        raise ConfigError(
            field=t.key("domains"), reason="at least one domain needs a weight above 0"
        )
    t.done()
    return PoolSpec(name=name, ips=ips, domains=doms)


def _parse_ip(t: Table) -> SourceIp:
    addr = t.text("address", required=True)
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ConfigError(field=t.key("address"), reason="not an IP address") from None
    ehlo = check_domain(t.text("ehlo", required=True), t.key("ehlo"))
    weight = t.integer("weight", field_default(SourceIp, "weight"), minimum=0)
    state = t.choice("state", field_default(SourceIp, "state"))
    t.done()
    return SourceIp(address=addr, ehlo=ehlo, weight=weight, state=state)


def _parse_domain(t: Table, key_domains: Set[str]) -> PlatformDomain:
    dom = check_domain(t.text("domain", required=True), t.key("domain"))
    sign = t.flag("sign", field_default(PlatformDomain, "sign"))
    if sign and dom not in key_domains:
        raise ConfigError(field=t.key("sign"), reason=f"no [[dkim.keys]] entry for {dom}")
    weight = t.integer("weight", field_default(PlatformDomain, "weight"), minimum=0)
    state = t.choice("state", field_default(PlatformDomain, "state"))
    t.done()
    return PlatformDomain(domain=dom, weight=weight, sign=sign, state=state)
