"""`maildispatch dkim status`: selectors per domain, which signs now, retired-record reminder."""

from __future__ import annotations

import json
from pathlib import Path

from dispatcher.config import Config, parse_config
from dispatcher.dkim.status import status_report, status_report_dict

JAN = 1767225600.0  # 2026-01-01T00:00:00Z
JUL = 1782864000.0  # 2026-07-01T00:00:00Z


def _config(tmp_path: Path) -> Config:
    raw = {
        "dkim": {
            "keys": [
                {"domain": "acme.example", "selector": "old", "file": "k/old.pem"},
                {
                    "domain": "acme.example",
                    "selector": "jan",
                    "file": "k/jan.pem",
                    "active_from": "2026-01-01T00:00:00Z",
                },
                {
                    "domain": "acme.example",
                    "selector": "jul",
                    "file": "k/jul.pem",
                    "active_from": "2026-07-01T00:00:00Z",
                },
                {"domain": "acme.example", "selector": "ed", "file": "k/ed.pem", "type": "ed25519"},
                {"domain": "send1.platform.example", "selector": "fbl1", "file": "k/fbl1.pem"},
            ]
        },
        "accounts": [{"name": "acme", "author_domains": ["acme.example"]}],
        "pools": [
            {
                "name": "p",
                "ips": [{"address": "127.0.0.2", "ehlo": "mta.platform.example"}],
                "domains": [{"domain": "send1.platform.example"}],
            }
        ],
    }
    return parse_config(raw, base_dir=tmp_path)


def test_status_between_rotations(tmp_path: Path) -> None:
    config = _config(tmp_path)
    data = status_report_dict(config, JAN + 86400)
    json.dumps(data)  # the --json form is plain data
    acme, platform = data["domains"]
    assert acme["domain"] == "acme.example" and acme["roles"] == ["author"]
    assert platform["roles"] == ["platform"] and platform["signing"] == ["fbl1"]
    states = {s["selector"]: s["state"] for s in acme["selectors"]}
    assert states == {"old": "retired", "jan": "signing", "jul": "scheduled", "ed": "signing"}
    assert acme["signing"] == ["jan", "ed"]
    old = next(s for s in acme["selectors"] if s["selector"] == "old")
    assert old["retired_at"] == "2026-01-01T00:00:00Z"
    assert old["keep_published_until"] == "2026-01-08T00:00:00Z"
    reminders = " ".join(data["reminders"])
    assert "old._domainkey.acme.example" in reminders
    assert "jul._domainkey.acme.example" in reminders

    text = status_report(config, JAN + 86400)
    assert "acme.example  [author]  signing now: jan, ed" in text
    assert "old._domainkey.acme.example published until at least 2026-01-08T00:00:00Z" in text
    assert "must stay published" in text


def test_status_after_the_next_rotation(tmp_path: Path) -> None:
    data = status_report_dict(_config(tmp_path), JUL)
    acme = data["domains"][0]
    states = {s["selector"]: (s["state"], s.get("retired_at")) for s in acme["selectors"]}
    assert states["jul"] == ("signing", None)
    assert states["jan"] == ("retired", "2026-07-01T00:00:00Z")
    assert states["old"] == ("retired", "2026-01-01T00:00:00Z")


def test_status_before_anything_is_active(tmp_path: Path) -> None:
    raw = {
        "dkim": {
            "keys": [
                {
                    "domain": "late.example",
                    "selector": "s1",
                    "file": "k.pem",
                    "active_from": "2030-01-01T00:00:00Z",
                }
            ]
        },
        "pools": [
            {
                "name": "p",
                "ips": [{"address": "127.0.0.2", "ehlo": "mta.platform.example"}],
                "domains": [{"domain": "late.example"}],
            }
        ],
    }
    text = status_report(parse_config(raw, base_dir=tmp_path), JAN)
    assert "signing now: NOTHING" in text
    assert "no RSA selector is active" in text
