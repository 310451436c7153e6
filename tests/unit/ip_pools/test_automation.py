"""Automation rules (ip_pools.automation) on a fake clock: triggers, slow with step-by-step
recovery, pause of one IP for one provider only, expiry, operators' pause and clear, the
counters written, and the config section."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.config import ConfigError, parse_config
from ip_pools.automation import (
    Action,
    Automation,
    AutomationRule,
    AutomationRuleError,
    Trigger,
    retry_elsewhere,
)
from ip_pools.categories import Category, CategoryTable
from ip_pools.counters import LocalCounters, pause_key

REPO = Path(__file__).resolve().parents[3]
T0 = 1_800_000_000.0
BLOCK = "5.7.1 Service unavailable; client host [127.0.0.2] blocked using Spamhaus"
TABLE = CategoryTable()

SLOW = AutomationRule.build("slow", 1800, pattern=r"4\.7\.28|rate limited", factor=0.5, steps=4)
PAUSE = AutomationRule.build("pause", 4 * 3600, pattern=r"spamhaus|blocked using", trigger="3/10m")


def reply(auto: Automation, ip: str, provider: str, code: int, text: str, now: float) -> list[Any]:
    return auto.observe(ip, provider, code, text, TABLE.classify(code, text), now)


def test_a_pause_fires_on_the_third_match_within_the_window_for_that_pair_only() -> None:
    auto = Automation((SLOW, PAUSE))
    assert reply(auto, "127.0.0.2", "google", 550, BLOCK, T0) == []
    assert reply(auto, "127.0.0.3", "google", 550, BLOCK, T0 + 1) == []  # another IP
    assert reply(auto, "127.0.0.2", "yahoo", 550, BLOCK, T0 + 2) == []  # another provider
    assert reply(auto, "127.0.0.2", "google", 550, BLOCK, T0 + 3) == []
    (ev,) = reply(auto, "127.0.0.2", "google", 550, BLOCK, T0 + 4)
    assert (ev.kind, ev.ip, ev.provider, ev.until, ev.rule) == (
        "ip.paused",
        "127.0.0.2",
        "google",
        T0 + 4 + 4 * 3600,
        1,
    )
    assert "Spamhaus" in ev.reason
    assert auto.paused_until("127.0.0.2", "google", T0 + 5) == T0 + 4 + 4 * 3600
    assert auto.paused_until("127.0.0.2", "yahoo", T0 + 5) == 0.0
    assert auto.paused_until("127.0.0.3", "google", T0 + 5) == 0.0


def test_matches_spread_wider_than_the_window_do_not_fire() -> None:
    auto = Automation((PAUSE,))
    for i in range(10):
        assert reply(auto, "127.0.0.2", "google", 550, BLOCK, T0 + i * 301) == []
    assert auto.active(T0 + 3100) == []


def test_a_pause_expires_by_itself_with_an_event() -> None:
    rule = AutomationRule.build("pause", 60, pattern="blocked")
    auto = Automation((rule,))
    reply(auto, "127.0.0.2", "google", 550, BLOCK, T0)
    assert auto.tick(T0 + 59) == []
    (ev,) = auto.tick(T0 + 60)
    assert (ev.kind, ev.ip, ev.provider) == ("ip.resumed", "127.0.0.2", "google")
    assert auto.paused_until("127.0.0.2", "google", T0 + 60) == 0.0
    assert auto.tick(T0 + 61) == []


def test_a_slow_lowers_the_rate_and_recovers_step_by_step() -> None:
    auto = Automation((SLOW,))
    (ev,) = reply(auto, "127.0.0.2", "google", 421, "4.7.28 rate limited", T0)
    assert (ev.kind, ev.factor, ev.until) == ("ip.slowed", 0.5, T0 + 1800)
    factors = [auto.rate_factor("127.0.0.2", "google", T0 + t) for t in (0, 449, 450, 900, 1350)]
    assert factors == [0.5, 0.5, 0.625, 0.75, 0.875]
    assert auto.rate_factor("127.0.0.2", "google", T0 + 1800) == 1.0
    assert auto.rate_factor("127.0.0.3", "google", T0) == 1.0  # other IPs untouched
    steps = [e for t in range(0, 1801, 50) for e in auto.tick(T0 + t)]
    assert [e.kind for e in steps] == ["ip.slow_step"] * 3 + ["ip.recovered"]
    assert [e.factor for e in steps] == [0.625, 0.75, 0.875, 1.0]


def test_a_421_storm_keeps_lowering_never_below_the_floor() -> None:
    auto = Automation((SLOW,))
    for i in range(20):
        reply(auto, "127.0.0.2", "google", 421, "4.7.28 rate limited", T0 + i)
    assert auto.rate_factor("127.0.0.2", "google", T0 + 20) == auto.min_factor
    (active,) = auto.active(T0 + 20)
    assert (active.action, active.until) == (Action.SLOW, T0 + 19 + 1800)


def test_first_match_wins_and_deliveries_never_match() -> None:
    catch_all = AutomationRule.build("pause", 60, pattern=".")
    auto = Automation((SLOW, catch_all))
    (ev,) = reply(auto, "127.0.0.2", "google", 421, "4.7.28 rate limited", T0)
    assert ev.kind == "ip.slowed"  # not paused by the second rule
    assert reply(auto, "127.0.0.2", "google", 250, "2.0.0 ok", T0) == []


def test_a_rule_may_match_a_category() -> None:
    rule = AutomationRule.build("pause", 3600, categories=["SpamBlock"])
    auto = Automation((rule,))
    assert reply(auto, "127.0.0.2", "microsoft", 550, "5.7.26 unauthenticated mail", T0) == []
    (ev,) = reply(auto, "127.0.0.2", "microsoft", 550, "5.7.606 banned sending IP (S3140)", T0)
    assert ev.kind == "ip.paused"


def test_connection_failures_are_checked_too() -> None:
    rule = AutomationRule.build("slow", 600, categories=["BadConnection"], trigger="2/1m")
    auto = Automation((rule,))
    assert (
        auto.observe("127.0.0.2", "google", None, "connection reset", Category.BadConnection, T0)
        == []
    )
    (ev,) = auto.observe(
        "127.0.0.2", "google", None, "connection reset", Category.BadConnection, T0 + 1
    )
    assert ev.kind == "ip.slowed"


async def test_operators_pause_and_clear_and_the_counters_follow() -> None:
    counters = LocalCounters()
    auto = Automation((AutomationRule.build("pause", 3600, pattern="blocked"),))
    reply(auto, "127.0.0.2", "google", 550, BLOCK, T0)
    manual = auto.pause("127.0.0.4", None, T0 + 7200, T0)
    assert (manual.provider, manual.manual) == ("*", True)
    await auto.write_pauses(counters)
    key = pause_key("127.0.0.2", "google")
    assert await counters.paused_until([key], T0 + 1) == T0 + 3600
    assert await counters.paused_until([pause_key("127.0.0.4")], T0 + 1) == T0 + 7200
    assert auto.paused_until("127.0.0.4", "yahoo", T0 + 1) == T0 + 7200  # every provider

    (cleared,) = auto.clear("127.0.0.2", "google", T0 + 10)
    assert (cleared.kind, cleared.reason) == ("ip.resumed", "cleared")
    await auto.write_pauses(counters)
    assert await counters.paused_until([key], T0 + 11) == 0.0
    assert auto.paused_until("127.0.0.2", "google", T0 + 11) == 0.0
    assert [a.ip for a in auto.active(T0 + 11)] == ["127.0.0.4"]


def test_a_reload_keeps_actions_in_force_and_restarts_counting() -> None:
    auto = Automation((PAUSE, SLOW))
    reply(auto, "127.0.0.2", "google", 421, "4.7.28 rate limited", T0)
    reply(auto, "127.0.0.2", "google", 550, BLOCK, T0)
    reply(auto, "127.0.0.2", "google", 550, BLOCK, T0)
    auto.replace_rules((PAUSE,))
    assert reply(auto, "127.0.0.2", "google", 550, BLOCK, T0) == []  # 1 of 3 again
    assert auto.rate_factor("127.0.0.2", "google", T0) == 0.5


def test_retry_from_another_ip_only_for_ip_reputation_and_once() -> None:
    assert retry_elsewhere(Category.SpamBlock, 0)
    assert not retry_elsewhere(Category.SpamBlock, 1)
    for c in (Category.AuthenticationFailed, Category.PolicyRelated, Category.SpamContent):
        assert not retry_elsewhere(c, 0)
    assert not retry_elsewhere(None, 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"action": "block", "duration": 1, "pattern": "x"}, "action"),
        ({"action": "slow", "duration": 0, "pattern": "x"}, "duration"),
        ({"action": "slow", "duration": 1, "pattern": "("}, "match"),
        ({"action": "slow", "duration": 1}, "match"),
        ({"action": "slow", "duration": 1, "categories": ["Nope"]}, "category"),
        ({"action": "slow", "duration": 1, "pattern": "x", "trigger": "3 per min"}, "trigger"),
        ({"action": "slow", "duration": 1, "pattern": "x", "factor": 1.5}, "factor"),
        ({"action": "slow", "duration": 1, "pattern": "x", "steps": 0}, "steps"),
    ],
)
def test_bad_rules_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    action, duration = kwargs.pop("action"), kwargs.pop("duration")
    with pytest.raises(AutomationRuleError) as err:
        AutomationRule.build(action, duration, **kwargs)
    assert err.value.field == field


def test_trigger_syntax() -> None:
    assert Trigger.parse("3/10m") == Trigger(3, 600.0)
    assert Trigger.parse("1/30s") == Trigger(1, 30.0)
    assert Trigger.parse(" 5 / 2h ") == Trigger(5, 7200.0)


def _raw() -> dict[str, Any]:
    return tomllib.loads((REPO / "config.toml").read_text())


def test_config_section() -> None:
    raw = _raw()
    raw["automation"] = [
        {"match": r"4\.7\.28|rate limited", "action": "slow", "duration": "30m"},
        {"category": ["SpamBlock"], "action": "pause", "duration": "4h", "trigger": "3/10m"},
    ]
    config = parse_config(raw, base_dir=REPO)
    slow, pause = config.automation
    assert (slow.action, slow.duration, slow.factor) == (Action.SLOW, 1800.0, 0.5)
    assert (pause.categories, pause.trigger) == (frozenset({Category.SpamBlock}), Trigger(3, 600))


@pytest.mark.parametrize(
    ("entry", "key_path"),
    [
        ({"match": "x", "duration": "1h"}, "automation[0].action"),
        ({"match": "x", "action": "pause"}, "automation[0].duration"),
        ({"match": "x", "action": "pause", "duration": "soon"}, "automation[0].duration"),
        ({"match": "(", "action": "pause", "duration": "1h"}, "automation[0].match"),
        ({"category": 3, "action": "pause", "duration": "1h"}, "automation[0].category"),
        ({"match": "x", "action": "nap", "duration": "1h"}, "automation[0].action"),
        (
            {"match": "x", "action": "pause", "duration": "1h", "trigger": "x"},
            "automation[0].trigger",
        ),
        ({"match": "x", "action": "pause", "duration": "1h", "extra": 1}, "automation[0].extra"),
    ],
)
def test_config_errors_name_the_key_path(entry: dict[str, Any], key_path: str) -> None:
    raw = _raw()
    raw["automation"] = [entry]
    with pytest.raises(ConfigError) as err:
        parse_config(raw, base_dir=REPO)
    assert err.value.key_path == key_path


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=7200),
            st.sampled_from(["127.0.0.2", "127.0.0.3"]),
            st.sampled_from(["google", "yahoo"]),
            st.sampled_from([(421, "4.7.28 rate limited"), (550, BLOCK), (250, "ok")]),
        ),
        max_size=40,
    )
)
def test_factors_stay_in_bounds_and_pauses_end(events: list[Any]) -> None:
    auto = Automation((SLOW, PAUSE))
    now = T0
    for dt, ip, prov, (code, text) in sorted(events, key=lambda e: e[0]):
        now = T0 + dt
        reply(auto, ip, prov, code, text, now)
        auto.tick(now)
        for a in auto.active(now):
            assert a.until > now
            if a.factor is not None:
                assert auto.min_factor <= a.factor < 1.0
    end = now + 5 * 3600
    auto.tick(end)
    assert auto.active(end) == []
    assert all(auto.rate_factor(ip, p, end) == 1.0 for ip in ("127.0.0.2",) for p in ("google",))
