"""[[providers]], [shaping.*], [[warmup.schedules]], pool overflow, IP state and warmup."""

from __future__ import annotations

import copy
import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import pytest

from dispatcher.config import ConfigError, parse_config
from ip_pools import IpState, ProviderMap, ShapingRule, WarmupAssignment, parse_rate

REPO = Path(__file__).resolve().parents[3]

ISSUE_EXAMPLE = """
[[providers]]
name = "google"
match = { mx_suffix = [".google.com", ".googlemail.com"] }
[[providers]]
name = "microsoft"
match = { mx_suffix = [".outlook.com", ".protection.outlook.com"], domain = ["hotmail.com"] }

[shaping.default]
connections = 10
messages_per_connection = 100
rate = "300/min"
[shaping.google]
connections = 20
rate = "3,000/min"

[[warmup.schedules]]
name = "standard"
per_day = [50, 100, 200, 400, 800, 1500, 3000, 6000, 12000, 25000, 50000]
providers = { google = [20, 40, 80, 160] }
advance_at = 0.5

[[pools]]
name = "warm"
overflow = "wait"
[[pools.ips]]
address = "198.51.100.7"
ehlo = "mta7.example.net"
state = "warming"
warmup = { schedule = "standard", started = 2026-12-01 }
[[pools.domains]]
domain = "send1.mdplatform.example"
"""


def repo_raw() -> dict[str, Any]:
    return tomllib.loads((REPO / "config.toml").read_text())


def with_example(**changes: Any) -> dict[str, Any]:
    """The repository's config with the issue's deliverability example in place."""
    raw = repo_raw()
    example = tomllib.loads(ISSUE_EXAMPLE)
    for key in ("providers", "shaping", "warmup"):
        raw[key] = example[key]
    raw["pools"][0]["name"] = "shared"  # the repository's pool, after the example's
    raw["pools"] = [*example["pools"], *raw["pools"]]
    for a in raw["accounts"]:
        a["pool"] = "warm"
    for mutate in changes.values():
        mutate(raw)
    return raw


def test_the_issue_example_reads_as_written() -> None:
    config = parse_config(with_example(), base_dir=REPO)
    names = [p.name for p in config.providers]
    assert names == ["google", "microsoft"]
    pm = ProviderMap(config.providers)
    assert pm.route_key("x.example", ["alt1.aspmx.l.google.com"]) == "google"
    assert pm.route_key("hotmail.com", ["mx.elsewhere.example"]) == "microsoft"
    assert config.shaping.default == ShapingRule(10, 100, parse_rate("300/min"))
    # google inherits messages_per_connection from the default.
    assert config.shaping.rule("google") == ShapingRule(20, 100, parse_rate("3000/min"))
    assert config.shaping.rule("mx:mx.small.example") == config.shaping.default
    schedule = config.warmup["standard"]
    assert schedule.total_cap(1) == 50 and schedule.provider_cap(4, "google") == 160
    ip = config.pools[0].ips[0]
    assert ip.state == IpState.WARMING
    assert ip.warmup == WarmupAssignment("standard", dt.date(2026, 12, 1), 1)
    assert config.pools[0].overflow == "wait"
    assert config.pools[1].ips[0].state == IpState.ACTIVE


def test_an_older_config_keeps_its_session_limits() -> None:
    raw = repo_raw()
    for key in ("providers", "shaping", "warmup"):
        raw.pop(key, None)
    raw["dispatch"].update(sessions_per_host=7, messages_per_session=33)
    config = parse_config(raw, base_dir=REPO)
    assert config.providers == ()
    assert config.shaping.default == ShapingRule(connections=7, messages_per_connection=33)
    assert config.shaping.rule("anything") == config.shaping.default
    assert config.warmup == {}
    # [shaping.default] without the limits takes them from [dispatch] too.
    raw["shaping"] = {"default": {"rate": "10/s"}}
    config = parse_config(raw, base_dir=REPO)
    assert config.shaping.default == ShapingRule(7, 33, parse_rate("10/s"))


def test_overflow_into_another_pool() -> None:
    config = parse_config(with_example(o=_set("pools/0/overflow", "pool:shared")), base_dir=REPO)
    assert config.pools[0].overflow == "shared"


def _set(path: str, value: Any) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        node: Any = raw
        *head, last = path.split("/")
        for part in head:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return mutate


def _drop(path: str) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        node: Any = raw
        *head, last = path.split("/")
        for part in head:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "key_path", "says"),
    [
        (_set("shaping/google/rate", "3000 per min"), "shaping.google.rate", "COUNT/UNIT"),
        (_set("shaping/google/rate", "0/min"), "shaping.google.rate", "above 0"),
        (_set("shaping/google/connections", 0), "shaping.google.connections", "at least 1"),
        (_set("shaping/yahoo", {"rate": "1/s"}), "shaping.yahoo", "no [[providers]]"),
        (_set("shaping/google/burst", 3), "shaping.google.burst", "unknown key"),
        (_set("providers/1/name", "google"), "providers[1].name", "twice"),
        (_set("providers/1/name", "Big Co"), "providers[1].name", "lower-case"),
        (_set("providers/1/name", "default"), "providers[1].name", "reserved"),
        (_drop("providers/0/match"), "providers[0].match", "required"),
        (_set("providers/0/match", {}), "providers[0].match", "mx_suffix or domain"),
        (_set("providers/0/match", {"mx": ["x.com"]}), "providers[0].match.mx", "unknown key"),
        (
            _set("providers/0/match", {"mx_suffix": ["not a domain"]}),
            "providers[0].match.mx_suffix[0]",
            "not a valid domain",
        ),
        (_set("warmup/schedules/0/per_day", []), "warmup.schedules[0].per_day", "non-empty"),
        (_set("warmup/schedules/0/per_day", [10, -1]), "warmup.schedules[0].per_day[1]", "whole"),
        (
            _set("warmup/schedules/0/providers", {"yahoo": [1]}),
            "warmup.schedules[0].providers.yahoo",
            "no [[providers]]",
        ),
        (_set("warmup/schedules/0/advance_at", 1.5), "warmup.schedules[0].advance_at", "0 to 1"),
        (_set("pools/0/overflow", "spill"), "pools[0].overflow", "pool:NAME"),
        (_set("pools/0/overflow", "pool:nowhere"), "pools[0].overflow", "no pool named"),
        (_set("pools/0/overflow", "pool:warm"), "pools[0].overflow", "itself"),
        (_set("pools/0/ips/0/state", "retired"), "pools[0].ips[0].state", "one of"),
        (_drop("pools/0/ips/0/warmup"), "pools[0].ips[0].warmup", "warming IP needs"),
        (_set("pools/0/ips/0/state", "active"), "pools[0].ips[0].state", "must be"),
        (
            _set("pools/0/ips/0/warmup", {"schedule": "fast", "started": dt.date(2026, 1, 1)}),
            "pools[0].ips[0].warmup.schedule",
            "no [[warmup.schedules]]",
        ),
        (
            _set("pools/0/ips/0/warmup", {"schedule": "standard", "started": "soon"}),
            "pools[0].ips[0].warmup.started",
            "a date",
        ),
        (
            _set(
                "pools/0/ips/0/warmup", {"schedule": "standard", "started": "2026-12-01", "day": 0}
            ),
            "pools[0].ips[0].warmup.day",
            "at least 1",
        ),
    ],
)
def test_errors_name_the_key_path(mutate: Any, key_path: str, says: str) -> None:
    raw = with_example(m=mutate)
    with pytest.raises(ConfigError) as err:
        parse_config(raw, base_dir=REPO)
    assert err.value.key_path == key_path
    assert says in str(err.value)


def test_no_probation_pool_overflows_into_a_warm_one_and_no_cycles() -> None:
    raw = with_example()
    probation = copy.deepcopy(raw["pools"][1])
    probation.update(name="probation", probation=True, overflow="pool:warm")
    probation["ips"] = [{"address": "127.0.0.9", "ehlo": "mta9.mdplatform.example"}]
    raw["pools"].append(probation)
    with pytest.raises(ConfigError, match="must not overflow") as err:
        parse_config(raw, base_dir=REPO)
    assert err.value.key_path == "pools[2].overflow"
    raw["pools"][2]["overflow"] = "pool:fallback"
    raw["pools"][1].update(name="fallback", probation=True, overflow="pool:probation")
    with pytest.raises(ConfigError, match="circle") as err:
        parse_config(raw, base_dir=REPO)
    raw["pools"][1]["overflow"] = "wait"
    config = parse_config(raw, base_dir=REPO)
    assert [(p.name, p.overflow, p.probation) for p in config.pools] == [
        ("warm", "wait", False),
        ("fallback", "wait", True),
        ("probation", "fallback", True),
    ]


def test_an_address_in_two_pools_is_one_ip() -> None:
    raw = with_example()
    raw["pools"][1]["ips"][0] = dict(raw["pools"][0]["ips"][0])
    parse_config(raw, base_dir=REPO)  # the same IP: fine
    raw["pools"][1]["ips"][0] = {"address": "198.51.100.7", "ehlo": "mta7.example.net"}
    with pytest.raises(ConfigError, match="another state") as err:
        parse_config(raw, base_dir=REPO)
    assert err.value.key_path == "pools[1].ips[0]"
