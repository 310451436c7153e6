"""A separate process on a SQLite queue file, driven by test_sqlite_processes.py.

python sqlite_child.py hold <db> <claim> <commit>     claim, mark some committing, report
                                                      as JSON, then wait to be killed
python sqlite_child.py exit <db> <claim> <commit>     the same, then exit without close()
python sqlite_child.py enqueue <db> <batches> <size> <prefix>
                                                      enqueue batches, one line after each
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from queues.protocol import NewMessage
from queues.sqlite.backend import SqliteQueue


def _message(prefix: str, n: int) -> NewMessage:
    return NewMessage(
        id=f"{prefix}-{n}",
        account="acme",
        idempotency_key=f"{prefix}-key-{n}",
        payload_hash=f"{prefix}-hash-{n}",
        author_domain="acme-news.example",
        rcpt=f"user{n}@gmail.example",
        rcpt_domain="gmail.example",
        verp_token=f"v{n}",
        message_id=f"<{prefix}.{n}@acme-news.example>",
        body=b"Subject: hi\r\n\r\nhi\r\n",
    )


async def hold(db: Path, claim: int, commit: int, then_exit: bool) -> None:
    queue = SqliteQueue(db)
    await queue.open()
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, claim, time.time())
    granted = await queue.mark_committing(lease, [m.id for m in claimed[:commit]])
    report = {
        "worker_id": lease.worker_id,
        "epoch": lease.epoch,
        "claimed": [m.id for m in claimed],
        "committing": sorted(granted),
    }
    print(json.dumps(report), flush=True)
    if then_exit:
        os._exit(0)  # no close(): like a crash, but a clean exit status
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def enqueue(db: Path, batches: int, size: int, prefix: str) -> None:
    queue = SqliteQueue(db)
    await queue.open()
    try:
        for b in range(batches):
            await queue.enqueue_many([_message(prefix, b * size + i) for i in range(size)])
            print(f"batch {b}", flush=True)
    finally:
        await queue.close()


def main(argv: list[str]) -> None:
    mode, db = argv[0], Path(argv[1])
    if mode in ("hold", "exit"):
        asyncio.run(hold(db, int(argv[2]), int(argv[3]), then_exit=mode == "exit"))
    elif mode == "enqueue":
        asyncio.run(enqueue(db, int(argv[2]), int(argv[3]), argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
