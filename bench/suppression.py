"""What the suppression check costs where mail leaves: `python -m bench.suppression
[--backend sqlite|postgres] [--suppressed 1000000] [--messages 20000]`.

Two stores, the same backlog: one with no suppressed address, one with `--suppressed`
entries (spread over the account's list and the platform-wide one; none matches the
backlog, so every message pays the lookups and is still sent). Each run claims the whole
backlog in batches of 200 and asks the committing mark of each batch (the two places the
store checks a queued message). The figure is CPU per message: this process's, every
thread (SQLite runs in-process; on PostgreSQL the server's CPU is not in it, so wall time
is given too). Median of three runs per store, interleaved; the ratio is against the empty
list in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from queues.protocol import Queue
from queues.suppressions import PLATFORM, Suppression, SuppressionReason
from tests.support.queues import messages

BATCH = 200


async def _open(backend: str, path: Path) -> Queue:
    if backend == "postgres":
        from queues.postgres.backend import PostgresQueue
        from tests.support.postgres import create_test_database

        q: Queue = PostgresQueue(await create_test_database(migrated=True))
    else:
        from queues.sqlite.backend import SqliteQueue

        q = SqliteQueue(path)
    await q.open()
    return q


async def _fill(queue: Queue, n: int) -> None:
    now = time.time()
    chunk: list[Suppression] = []
    for i in range(n):
        platform = i % 4 == 0
        chunk.append(
            Suppression(
                PLATFORM if platform else "acme",
                f"gone{i}@suppressed{i % 997}.example",
                SuppressionReason.HARD_BOUNCE if platform else SuppressionReason.UNSUBSCRIBE,
                "bench",
                now,
            )
        )
        if len(chunk) == 50_000:
            await queue.put_suppressions(chunk)
            chunk = []
    if chunk:
        await queue.put_suppressions(chunk)


async def _run(queue: Queue, count: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per message to claim and mark a backlog of `count`."""
    await queue.enqueue_many(messages(count))
    lease = await queue.register_worker()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    done = 0
    while True:
        claimed = await queue.claim(lease, BATCH, time.time())
        if not claimed:
            break
        granted = await queue.mark_committing(lease, [m.id for m in claimed])
        assert len(granted) == len(claimed)
        done += len(claimed)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert done == count, (done, count)
    await queue.close()
    return cpu / count, wall / count


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as name:
        await _runs(args, Path(name))


async def _runs(args: argparse.Namespace, tmp: Path) -> None:
    figures: dict[str, list[tuple[float, float]]] = {"none": [], "suppressed": []}
    for run in range(3):
        for label in ("none", "suppressed"):
            path = tmp / f"{label}-{run}.db"
            q = await _open(args.backend, path)
            if label == "suppressed":
                t = time.perf_counter()
                await _fill(q, args.suppressed)
                if run == 0:
                    took = time.perf_counter() - t
                    print(f"stored {args.suppressed:,} suppressions in {took:.1f}s")
            figures[label].append(await _run(q, args.messages))
    med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v))
           for k, v in figures.items()}  # fmt: skip
    for k, (cpu, wall) in med.items():
        print(f"{k:>10}: {cpu * 1e6:7.1f} us CPU/message, {wall * 1e6:7.1f} us wall/message")
    ratio = med["suppressed"][0] / med["none"][0] - 1
    print(f"suppression check with {args.suppressed:,} entries: CPU {ratio:+.1%} per message")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--suppressed", type=int, default=1_000_000)
    p.add_argument("--messages", type=int, default=20_000)
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    cli()
