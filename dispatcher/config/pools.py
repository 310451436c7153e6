"""`[[pools]]`, `[[pools.ips]]`, `[[pools.domains]]`: where mail leaves from.

The types are `ip_pools`' own (`PoolSpec`, `SourceIp`, `PlatformDomain`); their defaults live there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
from collections.abc import Mapping, Set

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table, field_default
from dispatcher.config.values import check_domain
from ip_pools.model import OVERFLOW_WAIT, IpState, PlatformDomain, PoolSpec, SourceIp
from ip_pools.warmup import WarmupAssignment, WarmupSchedule

SECTION = Section("pools[]", ("name", "overflow", "probation"))
IP_SECTION = Section("pools[].ips[]", ("address", "ehlo", "weight", "state"))
WARMUP_SECTION = Section("pools[].ips[].warmup", ("schedule", "started", "day"))
DOMAIN_SECTION = Section("pools[].domains[]", ("domain", "weight", "sign", "state"))
_POOL_PREFIX = "pool:"


def parse_pools(
    top: Table, key_domains: Set[str], schedules: Mapping[str, WarmupSchedule]
) -> tuple[PoolSpec, ...]:
    """Every pool; `key_domains` are the domains with a `[[dkim.keys]]` entry."""
    pools = tuple(_parse_pool(pt, key_domains, schedules) for pt in top.tables(SECTION))
    if not pools:
        raise ConfigError(field="pools", reason="at least one [[pools]] entry is required")
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise ConfigError(field="pools", reason="pool names must be unique")
    _check_overflow(pools)
    _check_shared_ips(pools)
    return pools


def _check_overflow(pools: tuple[PoolSpec, ...]) -> None:
    """Overflow names a pool; never a probation pool into another; no cycles."""
    by_name = {p.name: p for p in pools}
    for i, pool in enumerate(pools):
        where = f"pools[{i}].overflow"
        if pool.overflow == OVERFLOW_WAIT:
            continue
        target = by_name.get(pool.overflow)
        if target is None:
            raise ConfigError(field=where, reason=f"no pool named {pool.overflow!r}")
        if target is pool:
            raise ConfigError(field=where, reason="a pool cannot overflow into itself")
        if pool.probation and not target.probation:
            raise ConfigError(
                field=where,
                reason=f"probation pool {pool.name!r} must not overflow into {target.name!r}",
            )
        seen = {pool.name}
        while target.overflow != OVERFLOW_WAIT:
            if target.name in seen:
                raise ConfigError(
                    field=where, reason=f"overflow from {pool.name!r} goes round in a circle"
                )
            seen.add(target.name)
            target = by_name[target.overflow]


def _check_shared_ips(pools: tuple[PoolSpec, ...]) -> None:
    """An address in two pools is one IP: its state and warmup must be the same."""
    seen: dict[str, SourceIp] = {}
    for i, pool in enumerate(pools):
        for j, ip in enumerate(pool.ips):
            first = seen.setdefault(ip.address, ip)
            if (first.state, first.warmup) != (ip.state, ip.warmup):
                raise ConfigError(
                    field=f"pools[{i}].ips[{j}]",
                    reason=f"{ip.address} is in another pool with another state or warmup",
                )


def _parse_pool(
    t: Table, key_domains: Set[str], schedules: Mapping[str, WarmupSchedule]
) -> PoolSpec:
    name = t.text("name", required=True)
    overflow = t.text("overflow", OVERFLOW_WAIT)
    if overflow != OVERFLOW_WAIT:
        if not overflow.startswith(_POOL_PREFIX) or not overflow[len(_POOL_PREFIX) :]:
            raise ConfigError(
                field=t.key("overflow"), reason=f'expected "wait" or "pool:NAME", got {overflow!r}'
            )
        overflow = overflow[len(_POOL_PREFIX) :]
    probation = t.flag("probation", field_default(PoolSpec, "probation"))
    ips = tuple(_parse_ip(it, schedules) for it in t.tables(IP_SECTION))
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
    return PoolSpec(name=name, ips=ips, domains=doms, overflow=overflow, probation=probation)


def _parse_ip(t: Table, schedules: Mapping[str, WarmupSchedule]) -> SourceIp:
    addr = t.text("address", required=True)
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ConfigError(field=t.key("address"), reason="not an IP address") from None
    ehlo = check_domain(t.text("ehlo", required=True), t.key("ehlo"))
    weight = t.integer("weight", field_default(SourceIp, "weight"), minimum=0)
    state = t.choice("state", field_default(SourceIp, "state"))
    warmup = _parse_warmup(t.table(WARMUP_SECTION), schedules) if t.has("warmup") else None
    if not t.has("warmup"):
        t.raw("warmup")
    if state == IpState.WARMING and warmup is None:
        raise ConfigError(
            field=t.key("warmup"), reason='a warming IP needs { schedule = "...", started = ... }'
        )
    if warmup is not None and state != IpState.WARMING:
        raise ConfigError(field=t.key("state"), reason='an IP with a warmup must be "warming"')
    t.done()
    return SourceIp(address=addr, ehlo=ehlo, weight=weight, state=state, warmup=warmup)


def _parse_warmup(t: Table, schedules: Mapping[str, WarmupSchedule]) -> WarmupAssignment:
    schedule = t.text("schedule", required=True)
    if schedule not in schedules:
        raise ConfigError(
            field=t.key("schedule"), reason=f"no [[warmup.schedules]] entry named {schedule!r}"
        )
    started = t.raw("started")
    if isinstance(started, str):
        with contextlib.suppress(ValueError):  # refused just below
            started = dt.date.fromisoformat(started)
    if isinstance(started, dt.datetime) or not isinstance(started, dt.date):
        raise ConfigError(
            field=t.key("started"), reason=f"expected a date such as 2026-12-01, got {started!r}"
        )
    day = t.integer("day", field_default(WarmupAssignment, "day"), minimum=1)
    t.done()
    return WarmupAssignment(schedule=schedule, started=started, day=day)


def _parse_domain(t: Table, key_domains: Set[str]) -> PlatformDomain:
    dom = check_domain(t.text("domain", required=True), t.key("domain"))
    sign = t.flag("sign", field_default(PlatformDomain, "sign"))
    if sign and dom not in key_domains:
        raise ConfigError(field=t.key("sign"), reason=f"no [[dkim.keys]] entry for {dom}")
    weight = t.integer("weight", field_default(PlatformDomain, "weight"), minimum=0)
    state = t.choice("state", field_default(PlatformDomain, "state"))
    t.done()
    return PlatformDomain(domain=dom, weight=weight, sign=sign, state=state)
