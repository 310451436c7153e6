"""Where mail leaves from: pools of source IPs and platform sending domains (pure decisions)."""

from ip_pools.model import Pick, PlatformDomain, PoolSpec, SourceIp
from ip_pools.pools import Pool, PoolSet
from ip_pools.rotation import WeightedRotation

__all__ = ["Pick", "PlatformDomain", "Pool", "PoolSet", "PoolSpec", "SourceIp", "WeightedRotation"]
