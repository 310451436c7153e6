"""Counters shared by every process and node, in Redis (`[coordination] redis`).

Lua scripts beside this package do each decision in one round trip on Redis's own clock;
`link` pipelines the calls of a moment into one round trip; `keyspace` names the keys (one
hash tag per source IP). Every script checks a rebuild epoch and refuses after Redis lost
its data, until the counts are rebuilt from the store.
"""

from ip_pools.redis_counters.keyspace import Keyspace
from ip_pools.redis_counters.link import CoordinationUnavailable, RedisLink

__all__ = ["CoordinationUnavailable", "Keyspace", "RedisLink"]
