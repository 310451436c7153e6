"""`maildispatch bench [SCENARIO ...] [--messages N] [--json PATH] [--ci]`.

The same as `python -m bench ...`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.floors import FLOORS_FILE, check_floors, load_floors
from bench.report import print_results
from bench.runner import RunOptions, run_scenario
from bench.scenarios import by_name, scenarios


def parser() -> argparse.ArgumentParser:
    names = ", ".join(s.name for s in scenarios())
    p = argparse.ArgumentParser(
        prog="maildispatch bench",
        description=f"Run benchmark scenarios (default: all). Scenarios: {names}.",
    )
    p.add_argument("scenario", nargs="*", help="scenarios to run (default: all)")
    p.add_argument("--messages", type=int, help="messages per scenario (default: its own)")
    p.add_argument("--size", type=int, default=4200, help="message size in bytes (default 4200)")
    p.add_argument("--json", metavar="PATH", help="write the records (a JSON array) to PATH")
    p.add_argument(
        "--ci",
        action="store_true",
        help="short runs with the in-repo sink; exit 1 when a ratio falls below its floor",
    )
    p.add_argument(
        "--sink",
        choices=("bench", "smtp-sink"),
        default="bench",
        help="smtp-sink: Postfix's sink where installed (not for latency/TLS scenarios)",
    )
    p.add_argument("--delay", type=float, default=0.05, help="latency sink delay, s (0.05)")
    p.add_argument("--sessions", type=int, default=100, help="latency scenario sessions (100)")
    p.add_argument("--profile", metavar="PATH", help="profile the engine's dispatch phase")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--floors", type=Path, default=FLOORS_FILE, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios; 0 on success, 1 on a floor broken or a scenario failed, 2 on usage."""
    p = parser()
    args = p.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)  # CI logs: keep the table's columns readable
    try:
        chosen = by_name(args.scenario, args.delay, args.sessions)
    except ValueError as e:
        p.error(str(e))
    if args.messages is not None and args.messages < 1:
        p.error("--messages: must be at least 1")
    if args.sink == "smtp-sink" and (args.ci or not shutil.which("smtp-sink")):
        p.error("--sink smtp-sink: needs Postfix's smtp-sink on PATH, and is not for --ci")
    opts = RunOptions(
        messages=args.messages,
        ci=args.ci,
        size=args.size,
        sink=args.sink,
        profile=args.profile or "",
        loop=args.loop,
        timeout=120.0 if args.ci else 900.0,
    )
    records: list[dict[str, Any]] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        for sc in chosen:
            rec = run_scenario(sc, opts, progress)
            records.append(rec)
            progress.console.print(_one_line(rec))
    checks = check_floors(records, load_floors(args.floors))
    print_results(console, records, checks)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    failed = [c for c in checks if c.failed]
    errors = [r for r in records if r["status"] == "error"]
    for c in failed:
        console.print(
            f"[red]floor broken[/red]: {c.scenario} {c.ratio_name} = {c.ratio:.2f} < {c.floor:.2f}"
        )
    for r in errors:
        console.print(f"[red]scenario failed[/red]: {r['scenario']}: {r['reason']}")
    return 1 if failed or errors else 0


def _one_line(rec: dict[str, Any]) -> str:
    if rec["status"] != "ok":
        return f"{rec['scenario']}: {rec['status']} ({rec['reason']})"
    if rec.get("summary"):
        return f"{rec['scenario']}: {rec['summary']}"
    return (
        f"{rec['scenario']}: {rec.get('messages_per_s')} msgs/s, "
        f"{rec.get('cpu_s_per_1k')} CPU s/1k msgs"
    )
