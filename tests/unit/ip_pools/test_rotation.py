import itertools
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from ip_pools import WeightedRotation


@given(st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=8).filter(any))
def test_rotation_is_exact_over_each_cycle(weights: list[int]) -> None:
    rot = WeightedRotation([(i, w) for i, w in enumerate(weights)])
    total = sum(weights)
    for _ in range(3):
        got = Counter(rot.next() for _ in range(total))
        assert got == Counter({i: w for i, w in enumerate(weights) if w})


def test_rotation_interleaves() -> None:
    rot = WeightedRotation([("a", 3), ("b", 2), ("c", 1)])
    seq = [rot.next() for _ in range(6)]
    # Smooth rotation spreads the heavy IP out instead of sending it bursts.
    assert Counter(seq) == Counter("aaabbc")
    assert all(x != y for x, y in itertools.pairwise(seq))
