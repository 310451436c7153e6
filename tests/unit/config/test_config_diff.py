"""`config diff`: named items compared by name, a drain reads as a state change, secrets
never shown, restart-only changes marked; the fingerprint ignores order and comments."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from dispatcher.config import parse_config
from dispatcher.config.diff import diff, fingerprint

REPO = Path(__file__).resolve().parents[3]


def _raw() -> dict[str, Any]:
    return tomllib.loads((REPO / "config.toml").read_text())


def test_a_drain_an_added_ip_and_a_rule() -> None:
    raw = _raw()
    old = parse_config(raw, base_dir=REPO)
    new_raw = copy.deepcopy(raw)
    new_raw["pools"][0]["ips"][1]["state"] = "draining"
    new_raw["pools"][0]["ips"].append({"address": "127.0.0.9", "ehlo": "mta9.example.net"})
    new_raw["automation"] = [{"match": "spamhaus", "action": "pause", "duration": "4h"}]
    new_raw["queue"]["retention"] = "10d"
    lines = [str(c) for c in diff(old, parse_config(new_raw, base_dir=REPO))]
    assert "~ pools[warm].ips[127.0.0.3].state: active -> draining" in lines
    assert any(x.startswith("+ pools[warm].ips[127.0.0.9] = {") for x in lines)
    assert "+ automation[0] = match='spamhaus' -> pause 14400s" in lines
    assert "~ queue.retention: 2592000 -> 864000  (needs a restart)" in lines
    assert len(lines) == 4


def test_reordering_named_items_is_no_change_and_keeps_the_fingerprint() -> None:
    raw = _raw()
    old = parse_config(raw, base_dir=REPO)
    new_raw = copy.deepcopy(raw)
    new_raw["pools"][0]["ips"].reverse()
    new = parse_config(new_raw, base_dir=REPO)
    assert diff(old, new) == []
    assert fingerprint(old) == fingerprint(new)
    new_raw["dispatch"]["claim_batch"] = 7
    assert fingerprint(parse_config(new_raw, base_dir=REPO)) != fingerprint(old)


def test_a_dsn_is_never_shown() -> None:
    raw = _raw()
    raw["queue"].update(backend="postgres", dsn="postgresql://u:s3cret@db/mail")
    old = parse_config(raw, base_dir=REPO)
    raw2 = copy.deepcopy(raw)
    raw2["queue"]["dsn"] = "postgresql://u:other@db/mail"
    raw2["dispatch"]["claim_batch"] = 9
    text = " ".join(str(c) for c in diff(old, parse_config(raw2, base_dir=REPO)))
    assert "s3cret" not in text and "other" not in text
