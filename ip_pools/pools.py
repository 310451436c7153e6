"""Pools: pure decisions of which source IP and platform domain a message goes out with."""

from __future__ import annotations

from collections.abc import Iterable

from ip_pools.model import Pick, PlatformDomain, PoolSpec, SourceIp
from ip_pools.rotation import WeightedRotation


class Pool:
    """One pool's rotations of source IPs and platform sending domains."""

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        self._ips: WeightedRotation[SourceIp] = WeightedRotation([(i, i.weight) for i in spec.ips])
        self._domains: WeightedRotation[PlatformDomain] = WeightedRotation(
            [(d, d.weight) for d in spec.domains]
        )

    def pick(self) -> Pick:
        """The (source IP, platform domain) the next message of this pool goes out with."""
        return Pick(pool=self.spec.name, source=self._ips.next(), domain=self._domains.next())


class PoolSet:
    """All pools by name."""

    def __init__(self, specs: Iterable[PoolSpec]) -> None:
        self._pools = {s.name: Pool(s) for s in specs}
        if not self._pools:
            raise ValueError("at least one pool is required")
        self.default = next(iter(self._pools))

    def pick(self, pool: str | None) -> Pick:
        """Pick for the named pool (the first pool when None). KeyError for an unknown pool."""
        return self._pools[pool or self.default].pick()

    def names(self) -> list[str]:
        return list(self._pools)
