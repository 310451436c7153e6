"""Where mail leaves from: pools of source IPs and platform sending domains, providers,
shaping, warmup, and admission over counters (pure decisions; no network I/O but counters')."""

from ip_pools.admission import Admission, Caps, Choice, Decision, Policy, Reason
from ip_pools.counters import Counters, LocalCounters, TokenGrant
from ip_pools.model import IpState, Pick, PlatformDomain, PoolSpec, SourceIp
from ip_pools.pools import Pool, PoolSet
from ip_pools.providers import Provider, ProviderMap
from ip_pools.rates import Rate, RateSyntaxError, parse_rate
from ip_pools.rotation import WeightedRotation
from ip_pools.shaping import Shaping, ShapingRule
from ip_pools.warmup import WarmupAssignment, WarmupProgress, WarmupSchedule

__all__ = [
    "Admission",
    "Caps",
    "Choice",
    "Counters",
    "Decision",
    "IpState",
    "LocalCounters",
    "Pick",
    "PlatformDomain",
    "Policy",
    "Pool",
    "PoolSet",
    "PoolSpec",
    "Provider",
    "ProviderMap",
    "Rate",
    "RateSyntaxError",
    "Reason",
    "Shaping",
    "ShapingRule",
    "SourceIp",
    "TokenGrant",
    "WarmupAssignment",
    "WarmupProgress",
    "WarmupSchedule",
    "WeightedRotation",
    "parse_rate",
]
