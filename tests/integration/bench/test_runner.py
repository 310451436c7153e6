"""The runner end to end on a tiny `calibrate` run: two real processes, a real record."""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress

from bench.runner import RunOptions, run_scenario
from bench.scenarios import by_name


def test_calibrate_record_counts_round_trips_and_latency() -> None:
    (sc,) = by_name(["calibrate"])
    with Progress(console=Console(quiet=True)) as progress:
        rec = run_scenario(sc, RunOptions(messages=30), progress)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["delivered"] == 30
    # A new connection per message: greeting + EHLO, MAIL, RCPT, DATA, dot, QUIT.
    assert rec["round_trips_per_message"] == 7.0
    assert rec["sink"]["connections"] == 30
    assert rec["latency_matched"] == 30
    assert 0 <= rec["latency_p50_ms"] <= rec["latency_p99_ms"]
    assert rec["process_cpu_s"] > 0 and rec["sink"]["cpu_s"] > 0
    assert rec["peak_rss_mb"] > 0
    assert rec["git"]["commit"]
    assert rec["machine"]["cores"]


def test_unknown_scenario_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="nope"):
        by_name(["nope"])
