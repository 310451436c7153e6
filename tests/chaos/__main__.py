"""`python -m tests.chaos`: one chaos run; prints one line; exit 1 if the promise broke."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from tests.chaos.harness import ChaosOptions, run_chaos


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--duration", type=float, required=True, help="seconds of faults")
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    p.add_argument("--kills", type=int, default=0, help="default: max(20, duration / 4)")
    p.add_argument("--terms", type=int, default=4, help="SIGTERMs of random workers (timed)")
    p.add_argument("--fault-rate", type=float, default=0.3)
    p.add_argument("--drain-timeout", type=float, default=240.0)
    p.add_argument("--no-pg-restart", action="store_true")
    p.add_argument(
        "--redis-restarts",
        type=int,
        default=0,
        help="counters in a private redis-server, stopped and started empty this many times",
    )
    p.add_argument(
        "--ambiguous",
        choices=("hold", "retry"),
        default="hold",
        help="stream policy; retry resends unknowable outcomes, so duplicates are expected",
    )
    p.add_argument("--workdir", type=Path, help="default: a new temporary folder")
    a = p.parse_args()
    opts = ChaosOptions(
        seed=a.seed,
        duration=a.duration,
        messages=a.messages,
        workers=a.workers,
        backend=a.backend,
        kills=a.kills,
        terms=a.terms,
        restart_postgres=not a.no_pg_restart,
        redis_restarts=a.redis_restarts,
        fault_rate=a.fault_rate,
        drain_timeout=a.drain_timeout,
        ambiguous=a.ambiguous,
        workdir=a.workdir,
    )
    report = asyncio.run(run_chaos(opts))
    for example in report.verdict.examples:
        print(f"chaos: {example}", file=sys.stderr)
    print(f"chaos: worker logs and sink record in {report.workdir}", file=sys.stderr)
    print(report.line(), flush=True)
    return 0 if report.verdict.ok and report.kills >= min(20, a.kills or 20) else 1


if __name__ == "__main__":
    sys.exit(main())
