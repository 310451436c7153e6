"""Runs one scenario: sink process, dispatcher process, progress bar, and the record.

The sink and the dispatcher each run in their own process, so the kernel accounts their CPU
separately (wait4). Messages/s and CPU per message are for the dispatch phase only (after
enqueue); enqueue is reported on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rich.progress import Progress, TaskID

from bench.proc import Child, Usage
from bench.record import (
    git_commit,
    latencies,
    machine,
    percentile,
    read_arrivals,
    read_enqueue_times,
)
from bench.scenarios import Scenario, pg_dsn
from bench.spec import WorkerResult, WorkerSpec
from bench.tlscert import make_self_signed


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Choices that apply to every scenario of one invocation."""

    messages: int | None = None  # None: the scenario's own count (full or --ci)
    ci: bool = False
    size: int = 4200
    sink: str = "bench"  # or "smtp-sink" (Postfix), where installed
    profile: str = ""
    loop: str = "uvloop"
    timeout: float = 600.0


class _Lines:
    """The last state a child reported on stdout (READY, COUNT, PHASE, STATS, RESULT)."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.port = 0
        self.count = 0
        self.phase = "starting"
        self.stats: dict[str, Any] = {}
        self.result: WorkerResult | None = None

    def __call__(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "READY":
            self.port = int(rest)
            self.ready.set()
        elif word == "COUNT":
            self.count = int(rest)
        elif word == "PHASE":
            self.phase = rest
        elif word == "STATS":
            self.stats = json.loads(rest)
        elif word == "RESULT":
            self.result = WorkerResult.from_json(rest)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SinkRun:
    """The sink of one scenario, in its own process."""

    def __init__(self, sc: Scenario, kind: str, tmp: Path, loop: str) -> None:
        self.kind = kind
        self.lines = _Lines()
        self.arrivals = tmp / "arrivals.tsv"
        if kind == "smtp-sink":
            exe = shutil.which("smtp-sink")
            assert exe is not None
            self.port = _free_port()
            # As root smtp-sink must be told which user to become.
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            self.child = Child(
                [exe, *user, f"127.0.0.1:{self.port}", "1000"],
                self.lines,
                tmp / "sink.err",
                python=False,
            )
            self._wait_listening()
            return
        args = ["-m", "bench.sink_process", "--loop", loop, "--arrivals", str(self.arrivals)]
        if sc.delay:
            args += ["--delay", str(sc.delay)]
        if sc.tls:
            cert, key = make_self_signed(tmp)
            args += ["--cert", str(cert), "--key", str(key)]
        self.child = Child(args, self.lines, tmp / "sink.err")
        if not self.lines.ready.wait(30):
            self.child.kill()
            raise RuntimeError(f"sink did not start: {self.child.stderr_tail()}")
        self.port = self.lines.port

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.child.kill()
        raise RuntimeError("smtp-sink did not start listening")

    def stop(self) -> Usage:
        self.child.terminate()
        return self.child.wait(timeout=30)


class _PgDatabase:
    """A fresh PostgreSQL database for one run, dropped afterwards."""

    def __init__(self, base_dsn: str, name: str) -> None:
        self.base = base_dsn
        self.name = name
        parts = urlsplit(base_dsn)
        self.dsn = urlunsplit(parts._replace(path=f"/{name}"))

    def _admin(self, sql: str) -> None:
        import asyncpg  # type: ignore[import-untyped,unused-ignore]

        async def go() -> None:
            conn = await asyncpg.connect(self.base)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(go())

    def create(self) -> None:
        """Create the database and migrate it (setup: not part of any measurement)."""
        from queues.postgres.migrate import migrate

        self._admin(f'CREATE DATABASE "{self.name}"')
        asyncio.run(migrate(self.dsn))

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _base_record(sc: Scenario, opts: RunOptions, messages: int) -> dict[str, Any]:
    return {
        "scenario": sc.name,
        "description": sc.description,
        "status": "ok",
        "reason": "",
        "parameters": {
            "size": opts.size,
            "sink_delay_ms": sc.delay * 1000,
            "tls": sc.tls,
            "sessions": sc.sessions or None,
            "loop": opts.loop,
            "ci": opts.ci,
            **sc.params,
        },
        "messages": messages,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": git_commit(),
        "machine": machine(),
    }


def skipped(sc: Scenario, opts: RunOptions, reason: str) -> dict[str, Any]:
    """The record of a scenario that could not run here."""
    rec = _base_record(sc, opts, 0)
    rec.update(status="skipped", reason=reason)
    return rec


def run_scenario(sc: Scenario, opts: RunOptions, progress: Progress) -> dict[str, Any]:
    """Run `sc` and return its record (status ok, skipped or error)."""
    reason = sc.unavailable()
    if reason:
        return skipped(sc, opts, reason)
    messages = opts.messages or (sc.ci_messages if opts.ci else sc.messages)
    rec = _base_record(sc, opts, messages)
    sink_kind = opts.sink if (opts.sink == "smtp-sink" and not sc.delay and not sc.tls) else "bench"
    run_id = uuid.uuid4().hex[:10]
    task = progress.add_task(sc.name, total=messages if sc.sink else None)
    with tempfile.TemporaryDirectory(prefix=f"bench-{sc.name}-") as tmp_s:
        tmp = Path(tmp_s)
        db: _PgDatabase | None = None
        try:
            if sc.params.get("backend") == "postgres":
                db = _PgDatabase(pg_dsn(), f"mdbench_{run_id}")
                db.create()
            _run(sc, opts, rec, messages, run_id, tmp, sink_kind, db, progress, task)
        except Exception as e:  # a scenario failing is a result to report, not a crash
            rec.update(status="error", reason=f"{type(e).__name__}: {e}")
        finally:
            if db is not None:
                try:
                    db.drop()
                except Exception as e:  # the server went away: say so, keep the other results
                    rec["warning"] = f"could not drop database {db.name}: {e}"
            progress.update(task, visible=False)
    return rec


def _run(
    sc: Scenario,
    opts: RunOptions,
    rec: dict[str, Any],
    messages: int,
    run_id: str,
    tmp: Path,
    sink_kind: str,
    db: _PgDatabase | None,
    progress: Progress,
    task: TaskID,
) -> None:
    sink = SinkRun(sc, sink_kind, tmp, opts.loop) if sc.sink else None
    spec = WorkerSpec(
        **{
            **asdict(
                WorkerSpec(
                    kind=sc.kind,
                    messages=messages,
                    run_id=run_id,
                    port=sink.port if sink else 0,
                    size=opts.size,
                    tls=sc.tls,
                    enqueue_path=str(tmp / "enqueued.tsv"),
                    workdir=str(tmp / "state"),
                    profile=opts.profile if sc.kind == "engine" else "",
                    loop=opts.loop,
                    dsn=db.dsn if db else "",
                )
            ),
            **sc.params,
        }
    )
    lines = _Lines()
    worker = Child(["-m", "bench.worker", spec.to_json()], lines, tmp / "worker.err")
    deadline = time.monotonic() + opts.timeout
    try:
        while worker.poll() is None:
            done = sink.lines.count if sink else 0
            progress.update(task, completed=done, description=f"{sc.name} [{lines.phase}]")
            if time.monotonic() > deadline:
                worker.kill()
                worker.wait()
                raise TimeoutError(f"{sc.name}: no end after {opts.timeout:.0f} s")
            time.sleep(0.1)
    finally:
        sink_usage = sink.stop() if sink else None
    usage = worker.usage
    assert usage is not None
    if usage.exit_code != 0 or lines.result is None:
        tail = worker.stderr_tail(3000)
        rec["stderr_tail"] = tail
        last = next((x for x in reversed(tail.splitlines()) if x.strip()), "no output")
        raise RuntimeError(f"dispatcher exited {usage.exit_code}: {last.strip()}")
    res = lines.result
    if res.skipped:
        rec.update(status="skipped", reason=res.skipped)
        return
    _fill(rec, sc, messages, res, usage, sink, sink_usage, tmp)


def _fill(
    rec: dict[str, Any],
    sc: Scenario,
    messages: int,
    res: WorkerResult,
    usage: Usage,
    sink: SinkRun | None,
    sink_usage: Usage | None,
    tmp: Path,
) -> None:
    stats = sink.lines.stats if sink else {}
    delivered = int(stats.get("messages", res.sent))
    wall = res.run_wall_s
    rec.update(
        delivered=delivered,
        wall_s=round(wall, 3),
        messages_per_s=round(delivered / wall, 1) if wall > 0 else None,
        cpu_s_per_1k=round(res.run_cpu_s / delivered * 1000, 3) if delivered else None,
        enqueue_wall_s=round(res.enqueue_wall_s, 3),
        enqueue_cpu_s=round(res.enqueue_cpu_s, 3),
        process_cpu_s=round(usage.cpu_s, 3),
        peak_rss_mb=round(max(res.peak_rss_mb, res.details.get("helpers_peak_rss_mb", 0.0)), 1),
        outcomes=res.outcomes,
        details=res.details,
    )
    if sc.kind == "module":
        _module_figures(rec, res.details)
        return
    if sink is not None and sink_usage is not None:
        sink_rec: dict[str, Any] = {
            "name": "smtp-sink" if sink.kind == "smtp-sink" else "bench-sink (uvloop)",
            "cpu_s": round(sink_usage.cpu_s, 3),
            "cpu_s_per_1k": round(sink_usage.cpu_s / delivered * 1000, 3) if delivered else None,
            "peak_rss_mb": stats.get("peak_rss_mb"),
        }
        if stats and delivered:
            flights, conns = int(stats["flights"]), int(stats["connections"])
            sink_rec.update(connections=conns, flights=flights, tls_sessions=stats["tls_sessions"])
            rec["flights_per_message"] = round(flights / delivered, 2)
            rec["round_trips_per_message"] = round((flights + conns) / delivered, 2)
            if sc.delay and sc.sessions:
                rt = (flights + conns) / delivered
                rec["ceiling_messages_per_s"] = round(sc.sessions / (rt * sc.delay), 1)
        rec["sink"] = sink_rec
        lat = latencies(read_enqueue_times(tmp / "enqueued.tsv"), read_arrivals(sink.arrivals))
        if lat:
            rec["latency_p50_ms"] = round(percentile(lat, 50) * 1000, 1)
            rec["latency_p99_ms"] = round(percentile(lat, 99) * 1000, 1)
            rec["latency_matched"] = len(lat)
    if res.errors or delivered < messages:
        rec.update(
            status="error",
            reason=f"{delivered} of {messages} messages arrived"
            + (f"; {res.errors} errors, first: {res.first_error}" if res.errors else "")
            + (f"; outcomes {res.outcomes}" if res.outcomes else ""),
        )


def _module_figures(rec: dict[str, Any], details: dict[str, Any]) -> None:
    """Another engineer's module reports its own figures: keep its rate only if it gives one
    (its wall time covers several measurements, so messages / wall would mislead)."""
    rate = details.get("messages_per_s", details.get("msgs_per_s"))
    rec["messages_per_s"] = round(float(rate), 1) if isinstance(rate, int | float) else None
    rec["cpu_s_per_1k"] = None
    rec["summary"] = ", ".join(
        f"{k}={v}"
        for k, v in details.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and k.endswith(("_ms", "_s", "speedup", "_per_1000"))
    )
    if details.get("all_verified") is False or details.get("ok") is False:
        rec.update(status="error", reason=f"{rec['scenario']} module reported a failed check")
