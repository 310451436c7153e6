"""Shaping: per source IP and provider, how many connections, messages per connection, and
the message rate. A provider without its own rules uses `[shaping.default]`; a provider's
rule inherits every field it does not set from the default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ip_pools.rates import Rate


@dataclass(frozen=True, slots=True)
class ShapingRule:
    """Limits for one (source IP, provider). `rate` None is unlimited."""

    connections: int = 20
    messages_per_connection: int = 200
    rate: Rate | None = None


@dataclass(frozen=True, slots=True)
class Shaping:
    """The default rule and the providers' own (already merged with the default)."""

    default: ShapingRule = ShapingRule()
    providers: Mapping[str, ShapingRule] = field(default_factory=dict)

    def rule(self, route_key: str) -> ShapingRule:
        """The rule for a provider name or an MX site key."""
        return self.providers.get(route_key, self.default)
