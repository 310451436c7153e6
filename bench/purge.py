"""Purging a big backlog next to a running engine: `python -m bench.purge [--backend
sqlite|postgres] [--messages 1000000]`.

One store, `--messages` queued for the account being purged and a stream of another
account's mail that a marker keeps claiming, marking `committing` and settling, a few at a
time, on its own connection (as an engine does). The figures: the purge's wall time
(`Queue.cancel`, 5,000 rows per transaction), and the longest wait of a committing mark
while it runs against the longest one over the same time without a purge. Median of three.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from queues.protocol import Queue
from tests.support.queues import delivered, messages

MARK_BATCH = 10


async def _open(backend: str, path: Path, dsn: str | None) -> Queue:
    if backend == "postgres":
        from queues.postgres.backend import PostgresQueue

        assert dsn is not None
        q: Queue = PostgresQueue(dsn)
    else:
        from queues.sqlite.backend import SqliteQueue

        q = SqliteQueue(path)
    await q.open()
    return q


async def _marker(queue: Queue, stop: asyncio.Event, waits: list[float]) -> None:
    lease = await queue.register_worker()
    while not stop.is_set():
        claimed = await queue.claim(lease, MARK_BATCH, time.time())
        if not claimed:
            await asyncio.sleep(0.005)
            continue
        t = time.perf_counter()
        await queue.mark_committing(lease, [m.id for m in claimed])
        waits.append(time.perf_counter() - t)
        await queue.record_outcomes(lease, [delivered(m.id) for m in claimed])
        await asyncio.sleep(0.002)


async def _fill(queue: Queue, account: str, count: int, priority: int = 0) -> None:
    for start in range(0, count, 20_000):
        batch = messages(min(20_000, count - start), account=account, priority=priority)
        await queue.enqueue_many(batch)


async def one_run(args: argparse.Namespace, path: Path) -> tuple[float, float, float]:
    dsn = None
    if args.backend == "postgres":
        from tests.support.postgres import create_test_database

        dsn = await create_test_database(migrated=True)
    filler = await _open(args.backend, path, dsn)
    # Below the other mail's priority: the marker's claims never take the purged account's.
    await _fill(filler, "fraud", args.messages, priority=-1)
    await _fill(filler, "other", 50_000)
    engine = await _open(args.backend, path, dsn)
    # Baseline: the marker alone for a while.
    waits: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(_marker(engine, stop, waits))
    await asyncio.sleep(3.0)
    stop.set()
    await task
    alone = max(waits)
    # The purge, from another connection, while the marker runs.
    waits = []
    stop = asyncio.Event()
    task = asyncio.create_task(_marker(engine, stop, waits))
    await asyncio.sleep(0.5)
    t = time.perf_counter()
    n = await filler.cancel("fraud")
    wall = time.perf_counter() - t
    stop.set()
    await task
    assert n == args.messages, n
    during = max(waits)
    await engine.close()
    await filler.close()
    return wall, alone, during


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as name:
        await _runs(args, Path(name))


async def _runs(args: argparse.Namespace, tmp: Path) -> None:
    runs = [await one_run(args, tmp / f"q{i}.db") for i in range(args.runs)]
    wall = statistics.median(r[0] for r in runs)
    alone = statistics.median(r[1] for r in runs)
    during = statistics.median(r[2] for r in runs)
    print(f"purge of {args.messages:,} queued messages ({args.backend}): {wall:.1f}s wall")
    print(f"longest committing-mark wait: {during * 1000:.1f} ms during the purge, "
          f"{alone * 1000:.1f} ms without (median of {args.runs} runs)")  # fmt: skip


def cli() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    cli()
