"""The SQLite queue across real processes on one file: crash detection by flock, and
enqueue in one process while another claims."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from queues.protocol import Lease, MessageState
from queues.sqlite.backend import SqliteQueue
from queues.sqlite.locks import lock_dir
from tests.support.queues import delivered, messages

CHILD = Path(__file__).with_name("sqlite_child.py")
REPO = Path(__file__).resolve().parents[3]
HANG_GUARD = 60.0  # only against a hung child; no test expects anything near it


async def spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )


async def read_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(HANG_GUARD):
        line = await proc.stdout.readline()
    assert line, f"child exited early with {await proc.wait()}"
    return line.decode()


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SqliteQueue]:
    q = SqliteQueue(tmp_path / "queue.db")
    await q.open()
    try:
        yield q
    finally:
        await q.close()


@pytest.mark.parametrize("death", ["sigkill", "exit"])
async def test_dead_worker_process_is_detected_and_recovered(
    queue: SqliteQueue, death: str
) -> None:
    await queue.enqueue_many(messages(10))
    mode = "hold" if death == "sigkill" else "exit"
    child = await spawn(mode, str(queue.path), "6", "2")
    try:
        report: dict[str, Any] = json.loads(await read_line(child))
        lease = Lease(report["worker_id"], report["epoch"])
        assert len(report["claimed"]) == 6
        assert len(report["committing"]) == 2
        lock_file = lock_dir(queue.path) / f"{lease.worker_id}.lock"
        assert lock_file.exists()

        if death == "sigkill":
            # Alive: its lock is held, whatever the clock says.
            alive = await queue.recover(time.time() + 10 * queue.lease_ttl)
            assert alive.workers == 0
            child.send_signal(signal.SIGKILL)
        async with asyncio.timeout(HANG_GUARD):
            status = await child.wait()
        assert status == (-signal.SIGKILL if death == "sigkill" else 0)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()

    # Detected by the free lock, not by waiting for a lease to expire.
    report_ = await queue.recover(time.time())
    assert (report_.workers, report_.requeued, report_.ambiguous) == (1, 4, 2)
    assert not lock_file.exists()
    records = {r.id: r for r in await queue.get(report["claimed"])}
    assert {i for i, r in records.items() if r.state is MessageState.AMBIGUOUS} == set(
        report["committing"]
    )
    queued = set(report["claimed"]) - set(report["committing"])
    assert {i for i, r in records.items() if r.state is MessageState.QUEUED} == queued
    assert all(records[i].attempts == 0 for i in queued)
    # The dead process's epoch is fenced off.
    assert await queue.mark_committing(lease, sorted(queued)) == set()
    assert await queue.heartbeat(lease) is False


async def test_enqueue_in_one_process_while_another_claims(queue: SqliteQueue) -> None:
    batches, size = 20, 50
    lease = await queue.register_worker()
    child = await spawn("enqueue", str(queue.path), str(batches), str(size), "child")
    seen: list[str] = []
    try:
        assert (await read_line(child)).startswith("batch 0")
        async with asyncio.timeout(HANG_GUARD):
            while True:
                finished = child.returncode is not None
                claimed = await queue.claim(lease, 30, time.time())
                seen += [m.id for m in claimed]
                if claimed:
                    applied = await queue.record_outcomes(lease, [delivered(m) for m in claimed])
                    assert applied == len(claimed)
                elif finished:
                    break
                else:
                    await asyncio.sleep(0.01)
            assert await child.wait() == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert len(seen) == len(set(seen)) == batches * size
    assert set(seen) == {f"child-{n}" for n in range(batches * size)}
    assert (await queue.counts()).by_state == {"delivered": batches * size}
