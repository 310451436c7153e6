"""`[shaping.default]`, `[shaping.NAME]`: per source IP and provider, connections, messages
per connection and rate. A provider's table inherits what it leaves out from the default; the
default's own defaults are `[dispatch] sessions_per_host` and `messages_per_session`, so a
config written before shaping existed keeps its limits.
"""

from __future__ import annotations

from collections.abc import Set

from dispatcher.config.dispatch import DispatchConfig
from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table
from ip_pools.rates import RateSyntaxError, parse_rate
from ip_pools.shaping import Shaping, ShapingRule
from ip_pools.warmup import DEFAULT_PROVIDER

_KEYS = ("connections", "messages_per_connection", "rate")
SECTION = Section("shaping", (), free_form=True)
RULE_SECTION = Section("shaping.NAME", _KEYS)


def parse_shaping(t: Table, providers: Set[str], dispatch: DispatchConfig) -> Shaping:
    base = ShapingRule(
        connections=dispatch.sessions_per_host,
        messages_per_connection=dispatch.messages_per_session,
    )
    tables: dict[str, Table] = {}
    for name in t.data:
        value = t.raw(name)
        if name != DEFAULT_PROVIDER and name not in providers:
            raise ConfigError(field=t.key(name), reason=f"no [[providers]] entry named {name!r}")
        tables[name] = Table(value, t.key(name), RULE_SECTION)
    t.done()
    default = _rule(tables[DEFAULT_PROVIDER], base) if DEFAULT_PROVIDER in tables else base
    rules = {n: _rule(rt, default) for n, rt in tables.items() if n != DEFAULT_PROVIDER}
    return Shaping(default=default, providers=rules)


def _rule(t: Table, base: ShapingRule) -> ShapingRule:
    connections = t.integer("connections", base.connections, minimum=1)
    per_connection = t.integer("messages_per_connection", base.messages_per_connection, minimum=1)
    rate = base.rate
    if t.has("rate"):
        text = t.text("rate")
        try:
            rate = parse_rate(text)
        except RateSyntaxError as e:
            raise ConfigError(field=t.key("rate"), reason=str(e)) from None
    else:
        t.raw("rate")
    t.done()
    return ShapingRule(connections=connections, messages_per_connection=per_connection, rate=rate)
