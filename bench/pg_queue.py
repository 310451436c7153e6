"""PostgreSQL queue benchmarks (run by hand: `python -m bench.pg_queue [scenario ...]`).

Each `run_*` function makes a fresh database on the server of MAILDISPATCH_BENCH_PG_DSN
(default local trust auth), migrates it, measures, drops it, and returns a dict of figures.
No SMTP: these measure the queue alone.

- run_bulk_enqueue: one broadcast of N messages through enqueue_many (msgs/s, round trips).
- run_claim_cycle: claim + mark_committing + record_outcomes as fast as it goes over a
  preloaded backlog (msgs/s, round trips per 1,000 messages, claim latency).
- run_sustained: a producer keeps a backlog while workers cycle for `duration` seconds:
  claim latency p50/p99 and the hot table's dead tuples at the end.
- run_claim_with_history: claim latency after filling the history with N finished messages
  (generated in SQL, the fastest way to get millions of them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.message import body_text
from queues.postgres import PostgresQueue, migrate
from queues.protocol import Lease, MessageState, NewMessage, OutcomeRecord

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BODY_SIZE = 4200


def _base_dsn() -> str:
    return os.environ.get("MAILDISPATCH_BENCH_PG_DSN", DEFAULT_DSN)


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new migrated database for one benchmark, dropped afterwards."""
    name = f"mdbench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    base = _base_dsn()
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = urlunsplit(urlsplit(base)._replace(path="/" + name))
    try:
        await migrate(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(base)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


class ServerCpu:
    """CPU seconds used by the server backends serving one database (local server only).

    Throughput on a shared machine swings with the load of others; CPU seconds spent per
    message by the client (process_time) and by its backends (/proc) do not.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._start: dict[int, float] = {}
        self._tick = os.sysconf("SC_CLK_TCK")

    async def _pids(self) -> list[int]:
        conn = await asyncpg.connect(self._dsn)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [r["pid"] for r in rows]
        finally:
            await conn.close()

    def _cpu(self, pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick

    async def start(self) -> None:
        """Remember the CPU time of every backend now connected."""
        self._start = {p: c for p in await self._pids() if (c := self._cpu(p)) is not None}

    async def used(self) -> float | None:
        """CPU seconds since start() (backends connected meanwhile count from zero)."""
        pids = await self._pids()
        total = 0.0
        for p in pids:
            c = self._cpu(p)
            if c is None:
                return None  # not a local server
            total += c - self._start.get(p, 0.0)
        return round(total, 2)


def _body(size: int) -> bytes:
    head = (
        "From: news@bench-author.example\r\nTo: someone@bench-rcpt.example\r\n"
        "Subject: benchmark\r\nMIME-Version: 1.0\r\n\r\n"
    )
    return (head + body_text(size).replace("\n", "\r\n")).encode()


def messages(
    start: int, count: int, run: str, body: bytes, due_at: float = 0.0
) -> list[NewMessage]:
    """`count` broadcast messages numbered from `start` (unique ids and keys per run)."""
    return [
        NewMessage(
            id=f"{run}-{i}",
            account="bench",
            idempotency_key=f"{run}-{i}",
            payload_hash=f"h{i}",
            author_domain="bench-author.example",
            rcpt=f"r{i}@bench-rcpt.example",
            rcpt_domain="bench-rcpt.example",
            verp_token=f"v{i}",
            message_id=f"<{i}.{run}@bench-author.example>",
            body=body,
            stream="broadcast",
            campaign="bench",
            pool="warm",
            due_at=due_at,
        )
        for i in range(start, start + count)
    ]


def _ms(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


async def _preload(queue: PostgresQueue, count: int, run: str, body: bytes) -> None:
    step = 20_000
    for start in range(0, count, step):
        await queue.enqueue_many(messages(start, min(step, count - start), run, body))


class _Cycler:
    """One worker: claim a batch, mark it committing in groups, record it delivered."""

    def __init__(self, queue: PostgresQueue, lease: Lease, batch: int, mark_group: int) -> None:
        self.queue = queue
        self.lease = lease
        self.batch = batch
        self.mark_group = mark_group
        self.claim_latency: list[float] = []
        self.done = 0

    async def once(self) -> int:
        t0 = time.perf_counter()
        claimed = await self.queue.claim(self.lease, self.batch, time.time())
        self.claim_latency.append(time.perf_counter() - t0)
        if not claimed:
            return 0
        ids = [m.id for m in claimed]
        granted: set[str] = set()
        for i in range(0, len(ids), self.mark_group):
            granted |= await self.queue.mark_committing(self.lease, ids[i : i + self.mark_group])
        outcomes = [
            OutcomeRecord(
                i,
                MessageState.DELIVERED,
                reply_code=250,
                reply_text="250 2.0.0 Ok: queued",
                source_ip="127.0.0.2",
                platform_domain="send1.bench.example",
                mx_host="mx.bench-rcpt.example",
            )
            for i in granted
        ]
        applied = await self.queue.record_outcomes(self.lease, outcomes)
        self.done += applied
        return len(claimed)


async def run_bulk_enqueue(count: int = 100_000, body_size: int = BODY_SIZE) -> dict[str, Any]:
    """One enqueue_many of `count` messages (goal: >= 20,000 msgs/s)."""
    body = _body(body_size)
    async with fresh_database() as dsn:
        queue = PostgresQueue(dsn)
        await queue.open()
        try:
            batch = messages(0, count, "bulk", body)
            await queue.active_count()  # the pool's connection exists before measuring
            server = ServerCpu(dsn)
            await server.start()
            rt0 = queue.round_trips
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            results = await queue.enqueue_many(batch)
            elapsed = time.perf_counter() - t0
            client_cpu = time.process_time() - cpu0
            round_trips = queue.round_trips - rt0
            server_cpu = await server.used()
            assert sum(r.created for r in results) == count
            assert await queue.active_count() == count
        finally:
            await queue.close()
    return {
        "scenario": "pg_bulk_enqueue",
        "messages": count,
        "body_bytes": len(body),
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(count / elapsed),
        "round_trips": round_trips,
        "client_cpu_s": round(client_cpu, 2),
        "server_cpu_s": server_cpu,
        "load_avg_1m": os.getloadavg()[0],
    }


async def run_claim_cycle(
    count: int = 100_000,
    *,
    workers: int = 4,
    batch: int = 500,
    mark_group: int = 500,
    body_size: int = BODY_SIZE,
) -> dict[str, Any]:
    """claim + mark + outcome over a preloaded backlog (goal: >= 10,000 msgs/s burst)."""
    body = _body(body_size)
    async with fresh_database() as dsn:
        queue = PostgresQueue(dsn, max_connections=workers + 2)
        await queue.open()
        try:
            await _preload(queue, count, "cycle", body)
            cyclers = [
                _Cycler(queue, await queue.register_worker(), batch, mark_group)
                for _ in range(workers)
            ]

            async def work(c: _Cycler) -> None:
                while await c.once():
                    pass

            async def heartbeats() -> None:
                while True:
                    await asyncio.sleep(5)
                    for c in cyclers:
                        assert await queue.heartbeat(c.lease)

            beat = asyncio.create_task(heartbeats())
            server = ServerCpu(dsn)
            await server.start()
            rt0 = queue.round_trips
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            await asyncio.gather(*(work(c) for c in cyclers))
            elapsed = time.perf_counter() - t0
            client_cpu = time.process_time() - cpu0
            round_trips = queue.round_trips - rt0
            server_cpu = await server.used()
            beat.cancel()
            done = sum(c.done for c in cyclers)
            assert done == count, (done, count)
            assert await queue.active_count() == 0
        finally:
            await queue.close()
    latency = [x for c in cyclers for x in c.claim_latency]
    return {
        "scenario": "pg_claim_cycle",
        "messages": count,
        "workers": workers,
        "claim_batch": batch,
        "mark_group": mark_group,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(count / elapsed),
        "round_trips_per_1000": round(round_trips * 1000 / count, 2),
        "claim_p50_ms": _ms(latency, 0.50),
        "claim_p99_ms": _ms(latency, 0.99),
        "client_cpu_s": round(client_cpu, 2),
        "server_cpu_s": server_cpu,
        "load_avg_1m": os.getloadavg()[0],
    }


async def _table_stats(dsn: str, table: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        # Statistics are sent by backends with a delay of up to a second.
        await asyncio.sleep(1.5)
        row = await conn.fetchrow(
            "SELECT n_live_tup, n_dead_tup, autovacuum_count, vacuum_count,"
            " pg_total_relation_size(relid) AS bytes"
            " FROM pg_stat_user_tables WHERE relname = $1",
            table,
        )
        assert row is not None
        return dict(row)
    finally:
        await conn.close()


async def run_sustained(
    duration: float = 60.0,
    *,
    workers: int = 4,
    batch: int = 500,
    mark_group: int = 100,
    backlog: int = 20_000,
    body_size: int = BODY_SIZE,
    vacuum_every: float | None = None,
) -> dict[str, Any]:
    """A producer keeps about `backlog` messages waiting; workers cycle for `duration`.

    `vacuum_every` runs VACUUM on the hot table at that period, standing in for an
    autovacuum tuned for it (autovacuum_naptime is server-wide, 1 min by default).
    """
    body = _body(body_size)
    async with fresh_database() as dsn:
        queue = PostgresQueue(dsn, max_connections=workers + 3)
        await queue.open()
        try:
            cyclers = [
                _Cycler(queue, await queue.register_worker(), batch, mark_group)
                for _ in range(workers)
            ]
            produced = 0
            stop = asyncio.Event()

            async def produce() -> None:
                nonlocal produced
                while not stop.is_set():
                    waiting = produced - sum(c.done for c in cyclers)
                    if waiting < backlog:
                        step = 2000
                        await queue.enqueue_many(messages(produced, step, "sus", body))
                        produced += step
                    else:
                        await asyncio.sleep(0.005)

            async def work(c: _Cycler) -> None:
                while not stop.is_set():
                    if not await c.once():
                        await queue.wait_for_work(0.05)

            async def heartbeats() -> None:
                while not stop.is_set():
                    await asyncio.sleep(5)
                    for c in cyclers:
                        assert await queue.heartbeat(c.lease)

            vacuums = 0

            async def vacuum() -> None:
                nonlocal vacuums
                assert vacuum_every is not None
                conn = await asyncpg.connect(dsn)
                try:
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), vacuum_every)
                        await conn.execute("VACUUM md_message")
                        vacuums += 1
                finally:
                    await conn.close()

            await _preload(queue, backlog, "pre", body)
            produced_base = backlog
            tasks = [asyncio.create_task(produce()), asyncio.create_task(heartbeats())]
            if vacuum_every:
                tasks.append(asyncio.create_task(vacuum()))
            tasks += [asyncio.create_task(work(c)) for c in cyclers]
            rt0 = queue.round_trips
            t0 = time.perf_counter()
            await asyncio.sleep(duration)
            stop.set()
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - t0
            round_trips = queue.round_trips - rt0
            done = sum(c.done for c in cyclers)
            hot = await _table_stats(dsn, "md_message")
            history = await _table_stats(dsn, "md_history")
        finally:
            await queue.close()
    latency = [x for c in cyclers for x in c.claim_latency]
    return {
        "scenario": "pg_sustained",
        "duration_s": round(elapsed, 1),
        "workers": workers,
        "claim_batch": batch,
        "mark_group": mark_group,
        "enqueued": produced + produced_base,
        "finished": done,
        "msgs_per_s": round(done / elapsed),
        "round_trips_per_1000": round(round_trips * 1000 / max(done, 1), 2),
        "claims": len(latency),
        "claim_p50_ms": _ms(latency, 0.50),
        "claim_p99_ms": _ms(latency, 0.99),
        "claim_max_ms": _ms(latency, 1.0),
        "manual_vacuums": vacuums,
        "hot_table_end": hot,
        "history_end": {"n_live_tup": history["n_live_tup"], "bytes": history["bytes"]},
    }


_FILL_HISTORY = """
WITH ids AS (SELECT g, 'hist-' || g AS id FROM generate_series($1::bigint, $2::bigint) g),
content AS (
    INSERT INTO md_content (id, account, idempotency_key, author_domain, rcpt, rcpt_domain,
                            verp_token, message_id, smtputf8, enqueued_at, body)
    SELECT id, 'bench', id, 'bench-author.example', 'r' || g || '@bench-rcpt.example',
           'bench-rcpt.example', 'v' || g, '<' || g || '@bench-author.example>', false,
           $3, $4
    FROM ids
),
keys AS (
    INSERT INTO md_idempotency (account, idempotency_key, payload_hash, message_id, created_at)
    SELECT 'bench', id, 'h', id, $3 FROM ids
)
INSERT INTO md_history (id, state, attempts, account, campaign, stream, pool,
                        last_reply_code, last_reply_text, source_ip, platform_domain,
                        mx_host, enqueued_at, finished_at)
SELECT id, CASE WHEN g % 50 = 0 THEN 'bounced' ELSE 'delivered' END, 1, 'bench', 'bench',
       'broadcast', 'warm', 250, '250 2.0.0 Ok', '127.0.0.2', 'send1.bench.example',
       'mx.bench-rcpt.example', $3, $3 + g * 0.0001
FROM ids
"""


async def run_claim_with_history(
    history: int = 2_000_000,
    *,
    backlog: int = 50_000,
    batch: int = 500,
    fill_step: int = 500_000,
    body_bytes: int = 200,
) -> dict[str, Any]:
    """Claim latency with `history` finished messages stored (hot table: `backlog`)."""
    body = _body(BODY_SIZE)
    async with fresh_database() as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            t0 = time.perf_counter()
            for start in range(0, history, fill_step):
                stop = min(start + fill_step, history) - 1
                await conn.execute(
                    _FILL_HISTORY, start, stop, time.time() - 86400, b"x" * body_bytes
                )
            await conn.execute("VACUUM ANALYZE md_history")
            await conn.execute("VACUUM ANALYZE md_content")
            fill_seconds = time.perf_counter() - t0
            sizes = await conn.fetchrow(
                "SELECT pg_total_relation_size('md_history') AS history_bytes,"
                " pg_total_relation_size('md_content') AS content_bytes,"
                " (SELECT count(*) FROM md_history) AS history_rows"
            )
            assert sizes is not None
        finally:
            await conn.close()
        queue = PostgresQueue(dsn)
        await queue.open()
        try:
            await _preload(queue, backlog, "hot", body)
            cycler = _Cycler(queue, await queue.register_worker(), batch, batch)
            t1 = time.perf_counter()
            while await cycler.once():
                pass
            elapsed = time.perf_counter() - t1
        finally:
            await queue.close()
    latency = cycler.claim_latency[:-1]  # the last, empty claim is not a claim of a batch
    return {
        "scenario": "pg_claim_with_history",
        "history_rows": sizes["history_rows"],
        "history_fill_seconds": round(fill_seconds, 1),
        "history_bytes": sizes["history_bytes"],
        "content_bytes": sizes["content_bytes"],
        "backlog": backlog,
        "claim_batch": batch,
        "msgs_per_s": round(cycler.done / elapsed),
        "claims": len(latency),
        "claim_p50_ms": _ms(latency, 0.50),
        "claim_p99_ms": _ms(latency, 0.99),
        "claim_mean_ms": round(statistics.fmean(latency) * 1000, 3) if latency else 0.0,
    }


AUTHOR = "bench-author.example"


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # Linux: reset VmHWM to the current RSS


def _vmhwm_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def run_engine_backlog(
    count: int = 1_000_000, seconds: float = 20.0, body_size: int = 600
) -> dict[str, Any]:
    """The engine working through a backlog of `count` queued messages on PostgreSQL for
    `seconds`, into the bench sink: its peak RSS must not grow with the backlog
    (goal: < 300 MB at 1,000,000; it claims in batches and never loads the queue)."""
    import subprocess
    import tempfile

    from dispatcher.config import parse_config
    from dispatcher.engine.runtime import Runtime

    run = uuid.uuid4().hex[:8]
    body = _body(body_size)
    async with fresh_database() as dsn:
        tmp = Path(tempfile.mkdtemp(prefix="mdbench-backlog-"))
        sink = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.sink_process", "--port", "0", stdout=subprocess.PIPE
        )
        try:
            assert sink.stdout is not None
            port = int((await sink.stdout.readline()).split()[1])
            raw = {
                "state_dir": str(tmp),
                "queue": {"backend": "postgres", "dsn": dsn},
                "smtp": {"starttls": "never"},
                "dkim": {
                    "create_missing": True,
                    "keys": [
                        {
                            "domain": "bench-author.example",
                            "selector": "b",
                            "file": str(tmp / "k.pem"),
                        }
                    ],
                },
                "accounts": [{"name": "bench", "author_domains": [AUTHOR], "pool": "warm"}],
                "pools": [
                    {
                        "name": "warm",
                        "ips": [
                            {"address": f"127.0.0.{i}", "ehlo": f"mta{i}.bench.example"}
                            for i in (2, 3, 4)
                        ],
                        "domains": [{"domain": "send1.bench.example", "sign": False}],
                    }
                ],
                "routes": {"bench-rcpt.example": f"127.0.0.1:{port}"},
            }
            rt = await Runtime.open(parse_config(raw, base_dir=tmp))
            try:
                t0 = time.perf_counter()
                await _preload(rt.queue, count, run, body)  # type: ignore[arg-type]
                enqueue_s = time.perf_counter() - t0
                _reset_peak_rss()  # measure the dispatching engine, not the preload
                stop = asyncio.Event()
                asyncio.get_running_loop().call_later(seconds, stop.set)
                stats = await rt.run(stop=stop)
                left = await rt.queue.active_count()
            finally:
                await rt.close()
        finally:
            sink.terminate()
            await sink.wait()
    return {
        "scenario": "pg_engine_backlog",
        "queued": count,
        "enqueue_s": round(enqueue_s, 1),
        "dispatch_s": round(stats.elapsed, 1),
        "outcomes": dict(stats.outcomes),
        "still_queued": left,
        "peak_rss_mb_dispatching": round(_vmhwm_mb(), 1),
    }


SCENARIOS = ("bulk", "cycle", "sustained", "history", "backlog")


async def _main(args: argparse.Namespace) -> None:
    for name in args.scenarios:
        if name == "bulk":
            result = await run_bulk_enqueue(args.count)
        elif name == "cycle":
            result = await run_claim_cycle(args.count, workers=args.workers)
        elif name == "sustained":
            result = await run_sustained(
                args.duration, workers=args.workers, vacuum_every=args.vacuum_every
            )
        elif name == "backlog":
            result = await run_engine_backlog(args.count, args.duration)
        else:
            result = await run_claim_with_history(args.history)
        print(json.dumps(result), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named scenarios (all by default); one JSON line each on stdout."""
    p = argparse.ArgumentParser(prog="python -m bench.pg_queue", description=__doc__)
    p.add_argument(
        "scenarios", nargs="*", choices=SCENARIOS, default=[x for x in SCENARIOS if x != "backlog"]
    )
    p.add_argument("--count", type=int, default=100_000, help="messages (bulk, cycle)")
    p.add_argument("--workers", type=int, default=4, help="concurrent claimers")
    p.add_argument("--duration", type=float, default=60.0, help="seconds (sustained)")
    p.add_argument("--vacuum-every", type=float, default=None, help="seconds (sustained)")
    p.add_argument("--history", type=int, default=2_000_000, help="finished messages")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = p.parse_args(argv)
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
