"""Pools: pure decisions of which source IP and platform domain a message goes out with."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ip_pools.model import SENDING_STATES, Pick, PlatformDomain, PoolSpec, SourceIp
from ip_pools.rotation import WeightedRotation


class NoSourceAvailable(LookupError):
    """Every IP (or platform domain) of the pool is draining, paused or weighted 0: the
    message waits."""

    code = "no_source_available"


def _rotation(items: list[tuple[SourceIp, int]]) -> WeightedRotation[SourceIp] | None:
    return WeightedRotation(items) if any(w > 0 for _, w in items) else None


class Pool:
    """One pool's rotations of source IPs and platform sending domains; only those in a
    sending state (active, warming) take new mail."""

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        ips = [(i, i.weight) for i in spec.ips if i.state in SENDING_STATES]
        doms = [(d, d.weight) for d in spec.domains if d.state in SENDING_STATES]
        self._ips = _rotation(ips)
        self._domains: WeightedRotation[PlatformDomain] | None = (
            WeightedRotation(doms) if any(w > 0 for _, w in doms) else None
        )

    def pick(self, blocked: Callable[[str], bool] | None = None) -> Pick:
        """The (source IP, platform domain) the next message of this pool goes out with;
        IPs for which `blocked(address)` is true are passed over. NoSourceAvailable when
        none can take it."""
        if self._ips is None or self._domains is None:
            raise NoSourceAvailable(f"pool {self.spec.name}: no IP or domain takes new mail")
        source = self._ips.next()
        if blocked is not None and blocked(source.address):
            for _ in range(len(self.spec.ips)):
                source = self._ips.next()
                if not blocked(source.address):
                    break
            else:
                raise NoSourceAvailable(f"pool {self.spec.name}: every IP is paused for this")
        return Pick(pool=self.spec.name, source=source, domain=self._domains.next())

    def pick_domain(self) -> PlatformDomain:
        """The platform domain the next message of this pool goes out with (its source IP is
        admission's choice, made when a session takes it). NoSourceAvailable when none."""
        if self._domains is None:
            raise NoSourceAvailable(f"pool {self.spec.name}: no platform domain takes new mail")
        return self._domains.next()


class PoolSet:
    """All pools by name."""

    def __init__(self, specs: Iterable[PoolSpec]) -> None:
        self._pools = {s.name: Pool(s) for s in specs}
        if not self._pools:
            raise ValueError("at least one pool is required")
        self.default = next(iter(self._pools))

    def pick(self, pool: str | None, blocked: Callable[[str], bool] | None = None) -> Pick:
        """Pick for the named pool (the first pool when None). KeyError for an unknown pool,
        NoSourceAvailable when no IP of it may take the message."""
        return self._pools[pool or self.default].pick(blocked)

    def spec(self, pool: str | None) -> PoolSpec:
        """The named pool's spec (the first when None); KeyError for an unknown pool."""
        return self._pools[pool or self.default].spec

    def pick_domain(self, pool: str | None) -> PlatformDomain:
        """The next platform domain of the named pool (the first when None); KeyError for an
        unknown pool, NoSourceAvailable when none of its domains takes new mail."""
        return self._pools[pool or self.default].pick_domain()

    def names(self) -> list[str]:
        return list(self._pools)
