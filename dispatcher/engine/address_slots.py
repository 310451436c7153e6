"""Sessions per resolved MX address, counted across every lane of the engine.

Lanes are per (source IP, MX host name), but names are free: five hundred hostile domains
can point at one tarpit, reached from every source IP. So the engine also counts open (and
opening) sessions per address, and a lane may dial an address only while it holds fewer
than `cap`; `cap` is at most a share of `max_sessions`, which leaves the rest of the
sessions to every other destination. A lane turned away waits: it is woken when that
address frees a slot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable


class AddressSlots:
    """Counts of sessions per MX address, with a cap, and lanes to wake when one frees."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap = cap
        self._held: dict[str, int] = defaultdict(int)
        self._waiting: dict[str, list[Callable[[], None]]] = {}
        self.refused = 0  # times a lane was turned away (a metric of saturation)

    def held(self, address: str) -> int:
        return self._held.get(address, 0)

    def try_acquire(self, address: str) -> bool:
        """Take a slot for `address`; False when it holds `cap` sessions already."""
        if self._held[address] >= self.cap:
            self.refused += 1
            return False
        self._held[address] += 1
        return True

    def release(self, address: str) -> None:
        """Give a slot back and wake the lanes that were turned away from this address."""
        n = self._held.get(address, 0) - 1
        if n > 0:
            self._held[address] = n
        else:
            self._held.pop(address, None)
        wake = self._waiting.pop(address, None)
        for fn in wake or ():
            fn()

    def wait(self, address: str, wake: Callable[[], None]) -> None:
        """Call `wake` (once) when `address` next frees a slot."""
        waiting = self._waiting.setdefault(address, [])
        if wake not in waiting:
            waiting.append(wake)
