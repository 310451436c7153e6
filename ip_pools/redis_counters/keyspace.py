"""Key names in Redis. Every key of one source IP shares the hash tag `{ip}`.

The tag is the IP, not (IP, provider): a warmup cap counts the IP's sends to every
provider, so its total and its per-provider counts live in one hash of one slot, and a
rebuild writes an IP's keys in one script (a Redis Cluster could hold them).
"""

from __future__ import annotations

from dataclasses import dataclass

ANY_ROUTE = "*"


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key names under one prefix (one platform's fleet; tests use their own)."""

    prefix: str = "maildispatch"

    def epoch(self, ip: str) -> str:
        """The IP's epoch, "epoch|rebuilt_at_us"; missing after Redis lost its data."""
        return f"{self.prefix}:{{{ip}}}:epoch"

    def rate(self, ip: str, route: str) -> str:
        """GCRA theoretical arrival time (us) of (IP, route)."""
        return f"{self.prefix}:{{{ip}}}:rate:{route}"

    def day(self, ip: str, day: int) -> str:
        """Counts of one UTC day (days since the epoch): field "*" the IP, others routes."""
        return f"{self.prefix}:{{{ip}}}:day:{day}"

    def slots(self, ip: str, route: str) -> str:
        """Connection-slot leases of (IP, route): holder scored by the lease's end (ms)."""
        return f"{self.prefix}:{{{ip}}}:slots:{route}"

    def pauses(self, ip: str) -> str:
        """Pauses of the IP: field route (or "*") -> end (us since the epoch)."""
        return f"{self.prefix}:{{{ip}}}:pauses"

    # The fleet-wide coordination keys share their own tag.
    @property
    def coord(self) -> str:
        """Hash: epoch, state ("rebuilding" | "ready"), by (the rebuilding worker)."""
        return f"{self.prefix}:{{coord}}:state"

    @property
    def rebuild_lock(self) -> str:
        return f"{self.prefix}:{{coord}}:lock"

    def acks(self, epoch: str) -> str:
        """Set of worker ids that joined the rebuild of `epoch`."""
        return f"{self.prefix}:{{coord}}:acks:{epoch}"

    def unrecorded(self, epoch: str) -> str:
        """Hash "day|ip|route" -> sends the workers counted that the store may not have yet."""
        return f"{self.prefix}:{{coord}}:unrecorded:{epoch}"

    @property
    def channel(self) -> str:
        """Pub/sub channel: pauses raised, epoch changes."""
        return f"{self.prefix}:events"
