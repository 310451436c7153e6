"""Properties of the weighted rotation (ip_pools/rotation.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ip_pools import WeightedRotation

weights_lists = st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=7).filter(any)


@given(weights_lists, st.integers(min_value=0, max_value=30))
def test_every_window_of_sum_weights_holds_exact_proportions(
    weights: list[int], warmup: int
) -> None:
    rot = WeightedRotation(list(enumerate(weights)))
    for _ in range(warmup):  # any starting point, not only a fresh rotation
        rot.next()
    total = sum(weights)
    picks = [rot.next() for _ in range(3 * total)]
    expected = Counter({i: w for i, w in enumerate(weights) if w})
    window = Counter(picks[:total])
    assert window == expected
    for start in range(1, len(picks) - total + 1):  # slide one pick at a time
        window[picks[start - 1]] -= 1
        window[picks[start + total - 1]] += 1
        assert +window == expected, (weights, start)


@given(weights_lists, st.integers(min_value=1, max_value=200))
def test_weight_zero_is_never_chosen(weights: list[int], n: int) -> None:
    rot = WeightedRotation(list(enumerate(weights)))
    zero = {i for i, w in enumerate(weights) if w == 0}
    assert not zero & {rot.next() for _ in range(n)}


@given(st.lists(st.just(0), min_size=0, max_size=5))
def test_no_positive_weight_is_refused(weights: list[int]) -> None:
    with pytest.raises(ValueError):
        WeightedRotation(list(enumerate(weights)))
