"""`[coordination]`: the shared counters' Redis, parsed; errors name the key path; the
password never shows."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from dispatcher.config import ConfigError, OnUnavailable, parse_config

REPO = Path(__file__).resolve().parents[3]


def raw(**coordination: Any) -> dict[str, Any]:
    r = tomllib.loads((REPO / "config.toml").read_text())
    r["coordination"] = coordination
    return r


def test_absent_means_counters_in_each_process() -> None:
    r = tomllib.loads((REPO / "config.toml").read_text())
    r.pop("coordination", None)
    c = parse_config(r, REPO).coordination
    assert not c.shared and c.on_unavailable == OnUnavailable.WAIT


def test_redis_url_and_choices() -> None:
    c = parse_config(
        raw(redis="redis://:s3cret@10.0.0.5:6380/2", on_unavailable="local", timeout="250ms"),
        REPO,
    ).coordination
    assert c.shared and c.on_unavailable == OnUnavailable.LOCAL and c.timeout == 0.25
    assert "s3cret" not in repr(c)
    assert c.redacted_url() == "redis://10.0.0.5:6380/2"


@pytest.mark.parametrize(
    ("values", "key_path"),
    [
        ({"redis": "http://x"}, "coordination.redis"),
        ({"redis": "redis://h:99999/0"}, "coordination.redis"),
        ({"on_unavailable": "guess"}, "coordination.on_unavailable"),
        ({"key_prefix": "a{b}"}, "coordination.key_prefix"),
        ({"timeout": "0s"}, "coordination.timeout"),
        ({"token_window": "5s"}, "coordination.token_window"),
        ({"rebuild_wait": "2m"}, "coordination.rebuild_wait"),
        ({"extra": 1}, "coordination.extra"),
    ],
)
def test_errors_name_the_key(values: dict[str, Any], key_path: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(raw(**values), REPO)
    assert e.value.key_path == key_path
