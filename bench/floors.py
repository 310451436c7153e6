"""Floors for ratios measured in one job: a regression check that ignores machine speed.

For each scenario, its messages/s is divided by `calibrate`'s (a fixed workload that says how
fast this machine is right now) and by `baseline`'s (the naive sender users compare with).
A ratio under its floor in `bench/floors.toml` fails the check; absolute times never do.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.errors import InvalidInput

FLOORS_FILE = Path(__file__).with_name("floors.toml")
REFERENCES = {"vs_calibrate": "calibrate", "vs_baseline": "baseline"}


class FloorsError(InvalidInput):
    """floors.toml is malformed; `field` (also `key_path`) names the entry."""

    code = "floors_error"

    @property
    def key_path(self) -> str:
        return self.field


@dataclass(frozen=True, slots=True)
class FloorCheck:
    """One ratio compared with its floor; `ratio` is None when it could not be measured."""

    scenario: str
    ratio_name: str
    floor: float
    ratio: float | None
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.ratio is not None and self.ratio < self.floor


def load_floors(path: Path = FLOORS_FILE) -> dict[str, dict[str, float]]:
    """{scenario: {"vs_calibrate": floor, "vs_baseline": floor}} from floors.toml."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise FloorsError(field=str(path), reason=f"not valid TOML: {e}") from None
    out: dict[str, dict[str, float]] = {}
    for scenario, table in raw.items():
        if not isinstance(table, dict):
            raise FloorsError(field=scenario, reason="expected a table")
        out[scenario] = {}
        for name, value in table.items():
            if name not in REFERENCES:
                raise FloorsError(
                    field=f"{scenario}.{name}", reason=f"unknown ratio; use {', '.join(REFERENCES)}"
                )
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise FloorsError(field=f"{scenario}.{name}", reason="expected a positive number")
            out[scenario][name] = float(value)
    return out


def _rate(record: Mapping[str, Any] | None) -> float | None:
    if record is None or record.get("status") != "ok":
        return None
    rate = record.get("messages_per_s")
    return float(rate) if isinstance(rate, int | float) and rate > 0 else None


def check_floors(
    records: Sequence[Mapping[str, Any]], floors: Mapping[str, Mapping[str, float]]
) -> list[FloorCheck]:
    """Every floor that applies to these records, with its measured ratio.

    A scenario that did not run (skipped, failed, or absent) gives ratio None and never fails
    the check by itself: its own status says what happened.
    """
    by_name = {str(r.get("scenario")): r for r in records}
    checks: list[FloorCheck] = []
    for scenario, table in floors.items():
        record = by_name.get(scenario)
        if record is None:
            continue
        rate = _rate(record)
        for ratio_name, floor in table.items():
            ref = _rate(by_name.get(REFERENCES[ratio_name]))
            if rate is None or ref is None:
                why = "scenario" if rate is None else REFERENCES[ratio_name]
                checks.append(FloorCheck(scenario, ratio_name, floor, None, f"{why} not measured"))
            else:
                checks.append(FloorCheck(scenario, ratio_name, floor, rate / ref))
    return checks
