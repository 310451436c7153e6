"""The results table (rich) and the floors table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.floors import FloorCheck


def _num(value: Any, fmt: str = "{:,.1f}") -> str:
    return fmt.format(value) if isinstance(value, int | float) else "-"


def results_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """One row per scenario: rate, CPU, latency, RSS, sink and status."""
    t = Table(title="maildispatch bench", header_style="bold")
    for col in (
        "scenario",
        "msgs",
        "wall s",
        "msgs/s",
        "CPU s/1k",
        "p50 ms",
        "p99 ms",
        "RSS MB",
        "RT/msg",
        "ceiling",
        "sink CPU s/1k",
        "status",
    ):
        t.add_column(col, justify="left" if col in ("scenario", "status") else "right")
    for r in records:
        sink = r.get("sink") or {}
        status = str(r.get("status"))
        t.add_row(
            str(r.get("scenario")),
            _num(r.get("delivered"), "{:,}"),
            _num(r.get("wall_s"), "{:.2f}"),
            _num(r.get("messages_per_s")),
            _num(r.get("cpu_s_per_1k"), "{:.3f}"),
            _num(r.get("latency_p50_ms")),
            _num(r.get("latency_p99_ms")),
            _num(r.get("peak_rss_mb")),
            _num(r.get("round_trips_per_message"), "{:.2f}"),
            _num(r.get("ceiling_messages_per_s")),
            _num(sink.get("cpu_s_per_1k"), "{:.3f}"),
            status,
        )
    return t


def floors_table(checks: Sequence[FloorCheck]) -> Table:
    t = Table(title="ratio floors (bench/floors.toml)", header_style="bold")
    for col in ("scenario", "ratio", "measured", "floor", "verdict"):
        t.add_column(col, justify="right" if col in ("measured", "floor") else "left")
    for c in checks:
        if c.ratio is None:
            verdict = f"not checked ({c.note})"
        else:
            verdict = "[red]BELOW FLOOR[/red]" if c.failed else "[green]ok[/green]"
        t.add_row(c.scenario, c.ratio_name, _num(c.ratio, "{:.2f}"), f"{c.floor:.2f}", verdict)
    return t


def print_results(
    console: Console, records: Sequence[Mapping[str, Any]], checks: Sequence[FloorCheck]
) -> None:
    console.print(results_table(records))
    if checks:
        console.print(floors_table(checks))
