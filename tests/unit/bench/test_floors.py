"""The floors checker (a pure function on records), floors.toml, and record helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.floors import FLOORS_FILE, FloorsError, check_floors, load_floors
from bench.message import STANDARD_SIZE, body_lines, render
from bench.record import latencies, percentile


def rec(name: str, rate: float | None, status: str = "ok") -> dict[str, Any]:
    return {"scenario": name, "status": status, "messages_per_s": rate}


FLOORS = {"loopback": {"vs_calibrate": 0.5, "vs_baseline": 5.0}}


def test_passes_when_every_ratio_is_at_or_above_its_floor() -> None:
    records = [rec("calibrate", 1000), rec("baseline", 100), rec("loopback", 500)]
    checks = check_floors(records, FLOORS)
    assert {(c.ratio_name, c.ratio) for c in checks} == {("vs_calibrate", 0.5), ("vs_baseline", 5)}
    assert not any(c.failed for c in checks)


def test_fails_when_a_ratio_is_below_its_floor() -> None:
    records = [rec("calibrate", 1000), rec("baseline", 100), rec("loopback", 499)]
    failed = [c for c in check_floors(records, FLOORS) if c.failed]
    assert [(c.scenario, c.ratio_name) for c in failed] == [
        ("loopback", "vs_calibrate"),
        ("loopback", "vs_baseline"),
    ]


def test_only_the_ratio_below_fails() -> None:
    # A slow machine (calibrate low) makes only the baseline ratio fall.
    records = [rec("calibrate", 400), rec("baseline", 100), rec("loopback", 450)]
    failed = [c.ratio_name for c in check_floors(records, FLOORS) if c.failed]
    assert failed == ["vs_baseline"]


def test_a_skipped_scenario_is_reported_not_failed() -> None:
    records = [rec("calibrate", 1000), rec("baseline", 100), rec("loopback", None, "skipped")]
    checks = check_floors(records, FLOORS)
    assert [(c.ratio, c.failed, c.note) for c in checks] == [
        (None, False, "scenario not measured"),
        (None, False, "scenario not measured"),
    ]


def test_a_failed_reference_leaves_only_its_ratio_unchecked() -> None:
    records = [rec("calibrate", 1000), rec("baseline", 100, "error"), rec("loopback", 600)]
    checks = {c.ratio_name: c for c in check_floors(records, FLOORS)}
    assert checks["vs_baseline"].ratio is None
    assert checks["vs_baseline"].note == "baseline not measured"
    assert checks["vs_calibrate"].ratio == 0.6 and not checks["vs_calibrate"].failed


def test_scenarios_not_run_are_not_listed() -> None:
    assert check_floors([rec("calibrate", 1000)], FLOORS) == []


def test_repository_floors_file_is_valid() -> None:
    floors = load_floors(FLOORS_FILE)
    assert floors, "floors.toml sets at least one floor"
    for table in floors.values():
        assert set(table) <= {"vs_calibrate", "vs_baseline"}


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        ("[loopback]\nvs_calibrat = 1.0\n", "loopback.vs_calibrat"),
        ("[loopback]\nvs_baseline = -1\n", "loopback.vs_baseline"),
        ("[loopback]\nvs_baseline = 'x'\n", "loopback.vs_baseline"),
        ("loopback = 1\n", "loopback"),
    ],
)
def test_bad_floors_name_the_key(tmp_path: Path, text: str, key_path: str) -> None:
    p = tmp_path / "floors.toml"
    p.write_text(text)
    with pytest.raises(FloorsError) as e:
        load_floors(p)
    assert e.value.key_path == key_path


def test_percentile_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latencies_join_on_key() -> None:
    assert latencies({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.5, "c": 3.25, "z": 9.0}) == [
        0.25,
        0.5,
    ]


def test_standard_message_shape() -> None:
    lines = body_lines()
    assert len(lines) == 50 and all(len(x) == 76 for x in lines)
    m = render(3, "run")
    assert abs(len(m.data) - STANDARD_SIZE) < 100
    head = m.data.split(b"\r\n\r\n", 1)[0].decode()
    names = {h.split(":", 1)[0] for h in head.split("\r\n")}
    assert {"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"} <= names
    assert len(render(3, "run", 20000).data) > 19000
