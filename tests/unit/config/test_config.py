"""config.toml parsing: frozen objects, and errors that name the key path."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from dispatcher.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[3]


def repo_raw() -> dict[str, Any]:
    return tomllib.loads((REPO / "config.toml").read_text())


def test_repository_config_loads_frozen() -> None:
    config = load_config(REPO / "config.toml")
    assert [ip.weight for ip in config.pools[0].ips] == [3, 2, 1]
    assert {a.name for a in config.accounts} == {"acme", "creator"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dispatch.claim_batch = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mutate", "key_path"),
    [
        (lambda r: r["pools"][0]["ips"][1].update(address="300.1.2.3"), "pools[0].ips[1].address"),
        (lambda r: r["pools"][0]["ips"][0].update(weight="x"), "pools[0].ips[0].weight"),
        (lambda r: r["pools"][0]["ips"][0].pop("ehlo"), "pools[0].ips[0].ehlo"),
        (lambda r: r["queue"].update(backend="mysql"), "queue.backend"),
        (lambda r: r["queue"].update(backend="postgres"), "queue.dsn"),
        (lambda r: r["dispatch"].update(claim_batch=0), "dispatch.claim_batch"),
        (
            lambda r: r["dispatch"].update(retry_schedule=["5 minutes"]),
            "dispatch.retry_schedule[0]",
        ),
        (lambda r: r["smtp"].update(data_timeout="soon"), "smtp.data_timeout"),
        (
            lambda r: r["accounts"][1].update(author_domains=["nokey.example"]),
            "accounts[1].author_domains[0]",
        ),
        (lambda r: r["accounts"][0].update(pool="nope"), "accounts[0].pool"),
        (lambda r: r["dkim"]["keys"][2].update(selector="bad selector"), "dkim.keys[2].selector"),
        (lambda r: r["routes"].update({"x.example": "host:notaport"}), 'routes."x.example"[0]'),
        (lambda r: r.update(surprise=1), "surprise"),
        (
            lambda r: r["streams"]["broadcast"].update(ambiguous="resend"),
            "streams.broadcast.ambiguous",
        ),
        (
            lambda r: r["streams"]["broadcast"].update(ambiguous="release"),
            "streams.broadcast.ambiguous",
        ),
        (
            lambda r: r["streams"]["broadcast"].update(ambiguous="release:soon"),
            "streams.broadcast.ambiguous",
        ),
        (lambda r: r["smtp"].update(mark_at="mail"), "smtp.mark_at"),
        (lambda r: r["smtp"].update(mark_timeout="never"), "smtp.mark_timeout"),
    ],
)
def test_errors_name_the_key_path(mutate: Any, key_path: str) -> None:
    raw = repo_raw()
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        parse_config(raw, base_dir=REPO)
    assert err.value.key_path == key_path
    assert str(err.value).startswith(key_path + ":")


def test_ambiguous_release_after_a_delay_and_the_mark_settings() -> None:
    raw = repo_raw()
    raw.setdefault("streams", {}).setdefault("broadcast", {})["ambiguous"] = "release:6h"
    raw["smtp"].update(mark_at="data", mark_timeout="3s")
    config = parse_config(raw, base_dir=REPO)
    broadcast = config.streams["broadcast"]
    assert (broadcast.ambiguous, broadcast.release_after) == ("release", 6 * 3600.0)
    assert (
        config.streams["transactional"].ambiguous,
        config.streams["transactional"].release_after,
    ) == ("hold", None)
    assert (config.smtp.mark_at, config.smtp.mark_timeout) == ("data", 3.0)
    default = parse_config(repo_raw(), base_dir=REPO)
    assert (default.smtp.mark_at, default.smtp.mark_timeout) == ("dot", 10.0)


def test_config_check_cli_names_the_key(tmp_path: Path) -> None:
    text = (REPO / "config.toml").read_text().replace('address = "127.0.0.3"', 'address = "nope"')
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "config", "check", str(bad), "--skip-keys"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "pools[0].ips[1].address: not an IP address" in out.stderr


def test_dsn_password_not_in_repr(tmp_path: Path) -> None:
    raw = repo_raw()
    raw["queue"].update(backend="postgres", dsn="postgresql://u:s3cret@db/mail")
    config = parse_config(raw, base_dir=tmp_path)
    assert "s3cret" not in repr(config)
