"""Rates as operators write them (ip_pools/rates.py)."""

from __future__ import annotations

import pytest

from ip_pools import Rate, RateSyntaxError, parse_rate


@pytest.mark.parametrize(
    ("text", "count", "per", "burst"),
    [
        ("300/min", 300, 60, 1),
        ("10/s", 10, 1, 1),
        ("1,000/h", 1000, 3600, 1),
        ("20_000/d", 20000, 86400, 1),
        ("3,000/min,burst=50", 3000, 60, 50),
        (" 5 / second , burst = 2 ", 5, 1, 2),
        ("2.5/s", 2.5, 1, 1),
        ("1,234,567/day", 1234567, 86400, 1),
    ],
)
def test_rates_read_as_written(text: str, count: float, per: float, burst: int) -> None:
    assert parse_rate(text) == Rate(count, per, burst)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("300", "COUNT/UNIT"),
        ("0/min", "above 0"),
        ("300/week", "unknown unit"),
        ("1,00/h", "not a count"),
        ("abc/h", "not a count"),
        ("300/min,burst=0", "at least 1"),
        ("300/min,burst=x", "only burst"),
        ("300/min,max=3", "only burst"),
        ("", "COUNT/UNIT"),
    ],
)
def test_bad_rates_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(RateSyntaxError, match=says) as e:
        parse_rate(text)
    assert isinstance(e.value, ValueError)
    assert e.value.code == "invalid_rate"


def test_interval_and_tolerance() -> None:
    r = parse_rate("300/min,burst=5")
    assert r.interval == pytest.approx(0.2)
    assert r.tolerance == pytest.approx(0.8)
    assert r.per_minute == pytest.approx(300)
    assert str(r) == "300/min,burst=5"
    assert parse_rate(str(parse_rate("20_000/d"))) == parse_rate("20000/d")
