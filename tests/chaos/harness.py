"""The chaos run: real worker processes, a faulty recording sink, kills, a stop, a restart.

    known set  -> enqueue N messages (idempotent, trickled over most of the run)
    faults     -> the sink misbehaves by plan; the harness SIGKILLs random workers (a
                  replacement starts at once), SIGSTOPs one past its lease and resumes it,
                  and restarts PostgreSQL once
    quiescence -> faults stop; workers drain until no message is waiting or in flight
    check      -> every message's fate in the queue against the sink's record (checker.py)

Redis is not used by the engine yet, so it is not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dispatcher.config import Config, load_config
from dispatcher.engine.runtime import Runtime
from dispatcher.message.verp import Verp
from queues.protocol import HeldFilter, HeldReason
from tests.chaos.checker import Fate, Verdict, check
from tests.chaos.setup import DISPATCH, payload, write_config
from tests.chaos.sink import read_events
from tests.support.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]
PG_RESTART = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"]
RECOVERY_INTERVAL = 10.0  # dispatcher/engine.py: _recovery runs every 10 s


def _pg_lease_ttl() -> float:
    from queues.postgres.backend import PostgresQueue

    return float(inspect.signature(PostgresQueue).parameters["lease_ttl"].default)


@dataclass
class ChaosOptions:
    seed: int
    duration: float
    messages: int
    workers: int = 3
    backend: str = "postgres"
    kills: int = 0  # 0: max(20, one every 4 seconds)
    terms: int = 4  # SIGTERMs of random workers during the faults (graceful stops, timed)
    restart_postgres: bool = True
    redis_restarts: int = 0  # [coordination] redis on a private redis-server, restarted empty
    stop_worker: bool = True
    fault_rate: float = 0.3
    drain_timeout: float = 240.0
    ambiguous: str = "hold"  # the stream policy; "retry" must show up as duplicates
    workdir: Path | None = None


@dataclass
class ChaosReport:
    options: ChaosOptions
    verdict: Verdict
    kills: int = 0
    stops: int = 0
    pg_restarts: int = 0
    redis_restarts: int = 0
    exits: int = 0  # workers that exited without being killed
    crashes: int = 0  # ... with a non-zero status
    enqueued: int = 0
    elapsed: float = 0.0
    workdir: Path = field(default_factory=Path)
    terms: int = 0
    # Graceful stops (SIGTERM during the run and at its end): seconds from the signal to
    # the process's exit, and the MAIL commands each engine wrote after its stop flag.
    shutdowns: list[float] = field(default_factory=list)
    mails_after_stop: list[int] = field(default_factory=list)

    @property
    def longest_shutdown(self) -> float:
        return max(self.shutdowns, default=0.0)

    def line(self) -> str:
        v = self.verdict
        states = " ".join(f"{k}={n}" for k, n in sorted(v.states.items()))
        per_kill = max(1, self.kills)
        return (
            f"chaos: seed={self.options.seed} backend={self.options.backend} "
            f"messages={v.messages} kills={self.kills} stops={self.stops} terms={self.terms} "
            f"pg_restarts={self.pg_restarts} redis_restarts={self.redis_restarts} "
            f"exits={self.exits} crashes={self.crashes} "
            f"faults={v.faults} "
            f"lost={v.lost} duplicates={v.duplicates} ambiguous={v.ambiguous} "
            f"unfinished={v.unfinished} violations={v.violations} [{states}] "
            f"held_unreceived={v.unreceived_ambiguous} "
            f"held_recovered={v.recovered} held_recovered_unreceived={v.recovered_unreceived} "
            f"per_kill: held={v.recovered / per_kill:.1f} "
            f"unreceived={v.recovered_unreceived / per_kill:.1f} | "
            f"mails_after_stop={sum(self.mails_after_stop)} "
            f"(max {max(self.mails_after_stop, default=0)} of {len(self.mails_after_stop)} "
            f"stops) longest_shutdown={self.longest_shutdown:.2f}s "
            f"(shutdown_timeout {_shutdown_timeout():g}s) "
            f"elapsed={self.elapsed:.0f}s"
        )


def _shutdown_timeout() -> float:
    from dispatcher.config import parse_duration

    return parse_duration(str(DISPATCH["shutdown_timeout"]), "dispatch.shutdown_timeout")


_STOPPED = re.compile(rb"stopped: mails_after_stop=(\d+)")


def mails_after_stop(logs: Path) -> list[int]:
    """What each gracefully stopped engine logged (one figure per worker log that has it)."""
    out: list[int] = []
    for log in sorted(logs.glob("worker-*.log")):
        out += [int(m.group(1)) for m in _STOPPED.finditer(log.read_bytes())]
    return out


class Workers:
    """`maildispatch run` processes; keeps `count` of them alive."""

    def __init__(self, config: Path, count: int, logs: Path) -> None:
        self._config = config
        self._count = count
        self._logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []
        self._started = 0
        self.stopped: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.terms = 0
        self.shutdowns: list[float] = []  # seconds from SIGTERM to exit
        self._stopping: set[asyncio.Task[None]] = set()
        self.exits = 0  # exited by themselves (e.g. the stopped one, its lease lost)
        self.crashes = 0  # ... with a non-zero status

    def start_one(self) -> None:
        self._started += 1
        log = (self._logs / f"worker-{self._started:03d}.log").open("wb")
        self._files.append(log)
        cmd = [sys.executable, "-m", "dispatcher.cli", "run", "--config", str(self._config)]
        self.procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))

    def fill(self) -> None:
        """Replace workers that exited on their own (counted as crashes)."""
        for p in list(self.procs):
            code = p.poll()
            if code is not None:
                self.procs.remove(p)
                self.exits += 1
                self.crashes += code != 0
        while len(self.procs) < self._count:
            self.start_one()

    def kill_random(self, rng: random.Random) -> None:
        live = [p for p in self.procs if p.poll() is None and p is not self.stopped]
        if not live:
            return
        victim = rng.choice(live)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.procs.remove(victim)
        self.kills += 1
        self.start_one()

    def term_random(self, rng: random.Random) -> None:
        """SIGTERM a random worker and time its exit; a replacement starts at once (as an
        orchestrator rolling a deployment would)."""
        live = [p for p in self.procs if p.poll() is None and p is not self.stopped]
        if not live:
            return
        victim = rng.choice(live)
        self.procs.remove(victim)
        self.terms += 1
        task = asyncio.ensure_future(self._timed_stop(victim))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        self.start_one()

    async def _timed_stop(self, proc: subprocess.Popen[bytes], within: float = 60.0) -> None:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=within)
        except TimeoutError:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        self.shutdowns.append(time.monotonic() - t0)

    async def stop_all(self) -> None:
        """SIGTERM every worker at once and time each exit (the end of a run)."""
        self.resume()
        procs, self.procs = self.procs, []
        await asyncio.gather(*self._stopping, *(self._timed_stop(p) for p in procs))

    def stop_random(self, rng: random.Random) -> None:
        live = [p for p in self.procs if p.poll() is None]
        if live:
            self.stopped = rng.choice(live)
            self.stopped.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                self.stopped.send_signal(signal.SIGCONT)
            self.stopped = None

    def terminate(self, within: float = 20.0) -> None:
        self.resume()
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + within
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self._files:
            f.close()


class SinkProcess:
    """The recording sink in its own process (tests.chaos.sink)."""

    def __init__(self, work: Path, seed: int | None, rate: float) -> None:
        self.record = work / "sink.jsonl"
        self._port_file = work / "sink.port"
        cmd = [
            sys.executable, "-m", "tests.chaos.sink",
            "--record", str(self.record),
            "--port-file", str(self._port_file),
            "--verp-secret", str(work / "verp.key"),
            "--rate", str(rate),
        ]  # fmt: skip
        if seed is not None:
            cmd += ["--seed", str(seed)]
        self._log = (work / "sink.log").open("wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    async def port(self, within: float = 30.0) -> int:
        deadline = time.monotonic() + within
        while not self._port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the chaos sink did not start; see {self._log.name}")
            await asyncio.sleep(0.05)
        return int(self._port_file.read_text())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


async def _enqueue_all(rt: Runtime, opts: ChaosOptions, until: float, ids: dict[int, str]) -> None:
    """Enqueue the known set in chunks spread until `until`; retries survive outages
    because the idempotency key makes a repeated enqueue return the same id."""
    chunk = 100
    starts = list(range(0, opts.messages, chunk))
    t0 = time.monotonic()
    for k, start in enumerate(starts):
        due = t0 + (until - t0) * k / max(1, len(starts))
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        batch = [payload(opts.seed, i) for i in range(start, min(start + chunk, opts.messages))]
        while True:
            try:
                results = await rt.enqueue(batch)
                break
            except (ConnectionError, TimeoutError, OSError) as e:
                print(f"chaos: enqueue retried after {e!r}", file=sys.stderr)
                await asyncio.sleep(0.5)
        for j, r in enumerate(results):
            ids[start + j] = r.id


async def _restart_postgres() -> None:
    proc = await asyncio.create_subprocess_exec(
        *PG_RESTART, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"PostgreSQL restart failed: {err.decode(errors='replace')}")


async def _faults(
    opts: ChaosOptions,
    workers: Workers,
    t_end: float,
    report: ChaosReport,
    redis: RedisServer | None = None,
) -> None:
    """The process faults, on a schedule drawn from the seed."""
    rng = random.Random(opts.seed)
    d = opts.duration
    n_kills = opts.kills or max(20, int(d / 4))
    events: list[tuple[float, str]] = [
        (rng.uniform(0.03, 0.92) * d, "kill") for _ in range(n_kills)
    ]
    # Graceful stops from their own generator, so the kill schedule of a seed is unchanged.
    term_rng = random.Random(opts.seed + 1_000_003)
    events += [(term_rng.uniform(0.1, 0.9) * d, "term") for _ in range(opts.terms)]
    if opts.stop_worker:
        # Past its lease (PostgreSQL) and a recovery pass; on SQLite the flock of a stopped
        # process is still held, so nobody may take over: the stop just pauses it.
        hold = _pg_lease_ttl() + RECOVERY_INTERVAL + 5 if opts.backend == "postgres" else 10.0
        events += [(0.15 * d, "stop"), (0.15 * d + hold, "resume")]
    if opts.restart_postgres and opts.backend == "postgres":
        events.append((0.55 * d, "pg_restart"))
    if redis is not None:
        # Redis stopped for a second and started empty, from a generator of its own.
        redis_rng = random.Random(opts.seed + 2_000_003)
        events += [
            (redis_rng.uniform(0.1, 0.85) * d, "redis_restart") for _ in range(opts.redis_restarts)
        ]
    t0 = t_end - d
    for at, what in sorted(events):
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        if what == "kill":
            workers.kill_random(rng)
            report.kills += 1
        elif what == "term":
            workers.term_random(term_rng)
            report.terms += 1
        elif what == "stop":
            workers.stop_random(rng)
            report.stops += 1
        elif what == "resume":
            workers.resume()
        elif what == "redis_restart":
            assert redis is not None
            redis.stop()
            await asyncio.sleep(1.0)
            redis.start()
            report.redis_restarts += 1
        else:
            await _restart_postgres()
            report.pg_restarts += 1
    workers.resume()


async def _supervise(workers: Workers, done: asyncio.Event) -> None:
    while not done.is_set():
        workers.fill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=0.5)


async def _fates(rt: Runtime, config: Config, ids: list[str]) -> dict[str, Fate]:
    # Held by recovery: the same reason on both backends (`maildispatch held` shows it).
    recovered = {
        h.id
        for h in await rt.queue.held(HeldFilter(), limit=len(ids) + 1)
        if h.reason == HeldReason.WORKER_LOST
    }
    fates: dict[str, Fate] = {}
    for start in range(0, len(ids), 1000):
        for rec in await rt.queue.get(ids[start : start + 1000]):
            fates[rec.id] = Fate(rec.state, rec.id in recovered)
    return fates


async def _open_runtime(config: Config, within: float = 60.0) -> Runtime:
    deadline = time.monotonic() + within
    while True:
        try:
            return await Runtime.open(config)
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def _wait_drained(rt: Runtime, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if await rt.queue.active_count() == 0:
                return
        except (ConnectionError, OSError):
            pass
        await asyncio.sleep(1.0)


async def run_chaos(opts: ChaosOptions) -> ChaosReport:
    """One chaos run; the report's verdict says whether the promise held."""
    work = opts.workdir or Path(tempfile.mkdtemp(prefix=f"chaos-{opts.seed}-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    Verp.from_file(work / "verp.key", "b")  # the sink reads the secret the workers use
    sink = SinkProcess(work, opts.seed, opts.fault_rate)
    workers: Workers | None = None
    report = ChaosReport(opts, Verdict(), workdir=work)
    redis = RedisServer().start() if opts.redis_restarts else None
    try:
        port = await sink.port()
        dsn = ""
        if opts.backend == "postgres":
            from tests.support.postgres import create_test_database

            dsn = await create_test_database()
        config_path = write_config(
            work,
            sink_port=port,
            backend=opts.backend,
            dsn=dsn,
            ambiguous=opts.ambiguous,
            redis=redis.url if redis is not None else "",
        )
        config = load_config(config_path)
        rt = await Runtime.open(config)  # creates the DKIM keys before any worker starts
        ids: dict[int, str] = {}
        try:
            workers = Workers(config_path, opts.workers, work)
            workers.fill()
            t_end = time.monotonic() + opts.duration
            done = asyncio.Event()
            supervisor = asyncio.create_task(_supervise(workers, done))
            feeder = asyncio.create_task(
                _enqueue_all(rt, opts, time.monotonic() + 0.8 * opts.duration, ids)
            )
            await _faults(opts, workers, t_end, report, redis)
            await feeder
            await asyncio.sleep(max(0.0, t_end - time.monotonic()))
            print(f"chaos: faults over after {time.monotonic() - started:.0f}s; draining",
                  file=sys.stderr)  # fmt: skip
            await rt.close()  # its pool saw the restart; a fresh one reads the results
            rt = await _open_runtime(config)
            await _wait_drained(rt, opts.drain_timeout)
            done.set()
            await supervisor
            await workers.stop_all()
            report.shutdowns = workers.shutdowns
            report.mails_after_stop = mails_after_stop(work)
            report.exits = workers.exits
            report.crashes = workers.crashes
            report.kills = workers.kills
            sink.stop()
            id_list = [ids[i] for i in sorted(ids)]
            report.enqueued = len(id_list)
            fates = await _fates(rt, config, id_list)
            report.verdict = check(id_list, fates, read_events(sink.record))
            if len(id_list) != opts.messages:
                report.verdict.lost += opts.messages - len(id_list)
        finally:
            await rt.close()
    finally:
        if workers is not None:
            workers.terminate()
        if sink.proc.poll() is None:
            sink.stop()
        if redis is not None:
            redis.close()
    report.elapsed = time.monotonic() - started
    return report
