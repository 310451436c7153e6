"""The scenarios: what each one runs, against which sink, and how many messages.

A scenario says which dispatcher runs (`kind`), how the sink behaves, and the message counts
for a full run and for `--ci`. Whether it can run here is checked by `unavailable()`, which
returns the reason to skip it (None when it can run).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _engine_missing() -> str | None:
    try:
        found = importlib.util.find_spec("dispatcher.engine.runtime") is not None
    except ImportError:
        found = False
    if not found:
        return "engine not available (dispatcher.engine.runtime missing)"
    try:
        importlib.import_module("dispatcher.engine.runtime")
    except Exception as e:  # any import failure means the engine cannot run here
        return f"engine not available ({type(e).__name__}: {e})"
    return None


def _postgres_missing() -> str | None:
    reason = _engine_missing()
    if reason:
        return reason
    try:
        queues = importlib.import_module("queues")
        queues.open_queue("postgres", dsn=pg_dsn())
    except Exception as e:  # the backend is not there yet (or refuses its arguments)
        return f"postgres backend not available ({type(e).__name__}: {e})"
    return None


def _module_missing(name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if importlib.util.find_spec(name) is None:
            return f"{name} not available"
        return None

    return check


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark scenario (a record in the results)."""

    name: str
    description: str
    kind: str  # engine | naive | module
    messages: int
    ci_messages: int
    sink: bool = True
    delay: float = 0.0  # per-flight sink delay (latency scenarios)
    tls: bool = False
    sessions: int = 0  # concurrent sessions asked of the dispatcher (0: its default)
    params: dict[str, Any] = field(default_factory=dict)  # WorkerSpec overrides
    unavailable: Callable[[], str | None] = lambda: None


def scenarios(delay: float = 0.05, sessions: int = 100) -> list[Scenario]:
    """Every scenario, in the order they run."""
    latency = {"max_sessions": sessions, "sessions_per_host": sessions}
    return [
        Scenario(
            "calibrate",
            "naive aiosmtplib sender, no DKIM, new connection per message: this machine's speed",
            "naive",
            3000,
            2000,
            params={"dkim": False, "concurrency": 20},
        ),
        Scenario(
            "baseline",
            "naive aiosmtplib sender + dkimpy dkim.sign() (pure-Python RSA), new connection each",
            "naive",
            500,
            200,
            params={"dkim": True, "concurrency": 20},
        ),
        Scenario(
            "loopback",
            "engine, SQLite queue, DKIM RSA-2048 (author), 3 source IPs, fast sink",
            "engine",
            10000,
            2000,
            unavailable=_engine_missing,
        ),
        Scenario(
            "loopback-tls",
            "as loopback, with STARTTLS to the sink (self-signed certificate)",
            "engine",
            10000,
            2000,
            tls=True,
            unavailable=_engine_missing,
        ),
        Scenario(
            "loopback-postgres",
            "as loopback, PostgreSQL queue, one engine process",
            "engine",
            10000,
            2000,
            params={"backend": "postgres", "processes": 1},
            unavailable=_postgres_missing,
        ),
        Scenario(
            "loopback-postgres-2p",
            "as loopback, PostgreSQL queue, two engine processes",
            "engine",
            10000,
            2000,
            params={"backend": "postgres", "processes": 2},
            unavailable=_postgres_missing,
        ),
        Scenario(
            "latency",
            f"engine, sink answers each flight after {delay * 1000:.0f} ms, {sessions} sessions",
            "engine",
            3000,
            1500,
            delay=delay,
            sessions=sessions,
            params=latency,
            unavailable=_engine_missing,
        ),
        Scenario(
            "latency-early-mark",
            "as latency, with the committing mark asked for at MAIL and awaited before the "
            'body ([smtp] mark_at = "data"): the cost of the late mark is latency vs this',
            "engine",
            3000,
            1500,
            delay=delay,
            sessions=sessions,
            params={**latency, "mark_at": "data"},
            unavailable=_engine_missing,
        ),
        Scenario(
            "latency-naive",
            f"naive aiosmtplib, one connection per task, no DKIM, {delay * 1000:.0f} ms, "
            f"{sessions} sessions",
            "naive",
            3000,
            1500,
            delay=delay,
            sessions=sessions,
            params={"dkim": False, "reuse": True, "concurrency": sessions},
        ),
        Scenario(
            "dkim",
            "DKIM signing alone (bench/dkim.py)",
            "module",
            5000,
            1000,
            sink=False,
            params={"module": "bench.dkim"},
            unavailable=_module_missing("bench.dkim"),
        ),
        Scenario(
            "pg-queue",
            "PostgreSQL queue alone: claim + mark + outcome cycle, 4 workers (bench/pg_queue.py)",
            "module",
            50000,
            10000,
            sink=False,
            params={"module": "bench.pg_queue", "function": "run_claim_cycle"},
            unavailable=_module_missing("bench.pg_queue"),
        ),
        Scenario(
            "pg-enqueue",
            "PostgreSQL queue alone: one bulk enqueue_many (bench/pg_queue.py)",
            "module",
            50000,
            10000,
            sink=False,
            params={"module": "bench.pg_queue", "function": "run_bulk_enqueue"},
            unavailable=_module_missing("bench.pg_queue"),
        ),
    ]


def pg_dsn() -> str:
    """Where the postgres scenarios put their (fresh) database server connection."""
    return os.environ.get("MAILDISPATCH_BENCH_DSN", DEFAULT_PG_DSN)


def by_name(names: list[str], delay: float = 0.05, sessions: int = 100) -> list[Scenario]:
    """The named scenarios (all when `names` is empty); ValueError names an unknown one."""
    every = scenarios(delay, sessions)
    if not names:
        return every
    index = {s.name: s for s in every}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise ValueError(f"scenario: unknown {', '.join(unknown)}; choose from {', '.join(index)}")
    return [index[n] for n in names]
