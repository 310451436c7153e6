"""Quick throughput figures of the SQLite queue (run by hand, not collected by pytest).

    .venv/bin/python tests/integration/queues/bench_sqlite_queue.py [--messages 20000] [--sync FULL]

Prints the median of 3 runs of: enqueue_many in batches of 1,000 messages of 4 KB, and the
hot-path cycle claim(500) -> mark_committing(all) -> record_outcomes(all delivered).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from queues.protocol import MessageState, NewMessage, OutcomeRecord
from queues.sqlite.backend import SqliteQueue

BODY = os.urandom(2048).hex().encode()  # 4,096 bytes, incompressible-ish


def batch(start: int, size: int, random_ids: bool = False) -> list[NewMessage]:
    def ident(prefix: str, i: int) -> str:
        # Random ids (as uuid4 would give) scatter index inserts over the b-trees.
        return f"{prefix}{uuid.uuid4().hex}" if random_ids else f"{prefix}{i:09d}"

    return [
        NewMessage(
            id=ident("m", i),
            account="acct",
            idempotency_key=ident("k", i),
            payload_hash=f"h{i}",
            author_domain="news.example",
            rcpt=f"user{i}@dest{i % 50}.example",
            rcpt_domain=f"dest{i % 50}.example",
            verp_token=f"v{i}",
            message_id=f"<{i}@news.example>",
            body=BODY,
            priority=i % 3,
        )
        for i in range(start, start + size)
    ]


async def one_run(
    total: int, sync: str, batch_size: int, claim_size: int, random_ids: bool
) -> tuple[float, float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        queue = SqliteQueue(Path(tmp) / "bench.db", synchronous=sync)
        await queue.open()
        try:
            batches = [batch(i, batch_size, random_ids) for i in range(0, total, batch_size)]
            t0, c0 = time.perf_counter(), time.process_time()
            for b in batches:
                await queue.enqueue_many(b)
            enqueue_rate = total / (time.perf_counter() - t0)
            enqueue_cpu = (time.process_time() - c0) / total

            lease = await queue.register_worker()
            done = 0
            t0, c0 = time.perf_counter(), time.process_time()
            while True:
                claimed = await queue.claim(lease, claim_size, time.time())
                if not claimed:
                    break
                granted = await queue.mark_committing(lease, [m.id for m in claimed])
                outcomes = [
                    OutcomeRecord(
                        id=i,
                        state=MessageState.DELIVERED,
                        reply_code=250,
                        reply_text="2.0.0 ok",
                        source_ip="127.0.0.2",
                        platform_domain="mta.example",
                        mx_host="mx.dest.example",
                    )
                    for i in granted
                ]
                done += await queue.record_outcomes(lease, outcomes)
            cycle_rate = done / (time.perf_counter() - t0)
            cycle_cpu = (time.process_time() - c0) / total
            assert done == total, (done, total)
        finally:
            await queue.close()
    return enqueue_rate, cycle_rate, enqueue_cpu, cycle_cpu


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sync", default="FULL")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--claim", type=int, default=500)
    parser.add_argument("--random-ids", action="store_true")
    args = parser.parse_args()
    runs = [
        await one_run(args.messages, args.sync, args.batch, args.claim, args.random_ids)
        for _ in range(3)
    ]
    enqueue = statistics.median(r[0] for r in runs)
    cycle = statistics.median(r[1] for r in runs)
    print(
        f"synchronous={args.sync} messages={args.messages} batch={args.batch} "
        f"claim={args.claim} random_ids={args.random_ids}"
    )
    # CPU time (all threads of this process) per message: what the rate would cost on an
    # otherwise idle core, whatever else shares the machine.
    enqueue_cpu = statistics.median(r[2] for r in runs) * 1e6
    cycle_cpu = statistics.median(r[3] for r in runs) * 1e6
    print(
        f"enqueue_many: {enqueue:,.0f} msgs/s, {enqueue_cpu:.0f} us CPU/msg "
        f"(runs: {[round(r[0]) for r in runs]})"
    )
    print(
        f"claim+mark+outcome: {cycle:,.0f} msgs/s, {cycle_cpu:.0f} us CPU/msg "
        f"(runs: {[round(r[1]) for r in runs]})"
    )


if __name__ == "__main__":
    asyncio.run(main())
