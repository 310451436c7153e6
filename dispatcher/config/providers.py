"""`[[providers]]`, `[providers.match]`: destinations grouped as the big mailbox providers are.

The types and the matching are `ip_pools.providers`' own; this reads and checks the table.
"""

from __future__ import annotations

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table
from dispatcher.config.values import check_domain
from ip_pools.providers import PROVIDER_NAME, Provider
from ip_pools.warmup import DEFAULT_PROVIDER

SECTION = Section("providers[]", ("name",))
MATCH_SECTION = Section("providers[].match", ("mx_suffix", "domain"))


def parse_providers(top: Table) -> tuple[Provider, ...]:
    providers = tuple(_parse_provider(t) for t in top.tables(SECTION))
    seen: set[str] = set()
    for i, p in enumerate(providers):
        if p.name in seen:
            raise ConfigError(
                field=f"providers[{i}].name", reason=f"provider {p.name!r} is declared twice"
            )
        seen.add(p.name)
    return providers


def _parse_provider(t: Table) -> Provider:
    name = t.text("name", required=True)
    if not PROVIDER_NAME.fullmatch(name):
        raise ConfigError(
            field=t.key("name"), reason="expected lower-case letters, digits, - and _"
        )
    if name == DEFAULT_PROVIDER:
        raise ConfigError(
            field=t.key("name"), reason=f"{DEFAULT_PROVIDER!r} is reserved (the default rules)"
        )
    if not t.has("match"):
        raise ConfigError(
            field=t.key("match"), reason="is required: { mx_suffix = [...], domain = [...] }"
        )
    m = t.table(MATCH_SECTION)
    suffixes = _names(m, "mx_suffix")
    domains = _names(m, "domain")
    m.done()
    if not suffixes and not domains:
        raise ConfigError(field=m.path, reason="needs mx_suffix or domain")
    t.done()
    return Provider(name=name, mx_suffixes=suffixes, domains=domains)


def _names(t: Table, key: str) -> tuple[str, ...]:
    raw = t.raw(key, [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError(field=t.key(key), reason="expected a list of domain names")
    out = []
    for i, value in enumerate(raw):
        where = f"{t.key(key)}[{i}]"
        if not isinstance(value, str):
            raise ConfigError(field=where, reason="expected a domain name")
        # ".google.com" and "google.com" mean the same: the name and its subdomains.
        out.append(check_domain(value.strip().lstrip("."), where))
    return tuple(out)
