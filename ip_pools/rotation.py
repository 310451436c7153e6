"""Weighted rotation: smooth weighted round-robin (as nginx's upstream balancer).

Deterministic and exact over any window of sum(weights) picks, so a 3:2:1 split holds
for small runs too, and it interleaves (a, b, a, c, a, b) rather than bursting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class WeightedRotation(Generic[T]):
    """Picks items in proportion to their integer weights; weight 0 is never picked."""

    __slots__ = ("_current", "_items", "_total", "_weights")

    def __init__(self, items: Sequence[tuple[T, int]]) -> None:
        pairs = [(item, w) for item, w in items if w > 0]
        if not pairs:
            raise ValueError("rotation needs at least one item with a weight above 0")
        self._items = [item for item, _ in pairs]
        self._weights = [w for _, w in pairs]
        self._total = sum(self._weights)
        self._current = [0] * len(pairs)

    def next(self) -> T:
        """The next item of the rotation."""
        cur = self._current
        best = 0
        for i, w in enumerate(self._weights):
            cur[i] += w
            if cur[i] > cur[best]:
                best = i
        cur[best] -= self._total
        return self._items[best]
