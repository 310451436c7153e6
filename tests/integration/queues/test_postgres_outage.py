"""A PostgreSQL outage mid-run: the queue raises QueueUnavailable, then works again.

Stops and restarts the real server (root and pg_ctlcluster needed), so other tests using
it see their connections drop: this is the only test doing it, it holds a file lock so two
runs never restart at once, it is quick, and it always leaves the server running.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any
from urllib.parse import urlsplit

import pytest

from queues.errors import QueueUnavailable
from queues.postgres import PostgresQueue
from queues.protocol import MessageState, OutcomeRecord
from tests.support.postgres import base_dsn, create_test_database, make_message

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LOCK_FILE = "/tmp/maildispatch-pg-restart.lock"
BOUND = 60.0  # no call may hang: each must return or raise well within this


async def _cluster() -> tuple[str, str]:
    """(version, name) of the local cluster on the test DSN's port."""
    port = str(urlsplit(base_dsn()).port or 5432)
    proc = await asyncio.create_subprocess_exec(
        "pg_lsclusters", "-h", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    for line in out.decode().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == port:
            return fields[0], fields[1]
    pytest.skip(f"no local cluster on port {port}")


async def _pg_ctl(version: str, name: str, action: str) -> None:
    args = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action]
    if action in ("stop", "restart"):
        args += ["-m", "fast"]
    proc = await asyncio.create_subprocess_exec(*args)
    assert await proc.wait() == 0, f"{' '.join(args)} failed"


async def _ensure_running(version: str, name: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "pg_ctlcluster", version, name, "status", stdout=asyncio.subprocess.DEVNULL
    )
    if await proc.wait() != 0:
        await _pg_ctl(version, name, "start")


async def _unavailable(call: Awaitable[Any]) -> QueueUnavailable:
    with pytest.raises(QueueUnavailable) as err:
        await asyncio.wait_for(call, BOUND)
    return err.value


@pytest.fixture
async def restart_lock() -> AsyncIterator[None]:
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None:
        pytest.skip("needs root and pg_ctlcluster to stop the server")
    host = urlsplit(base_dsn()).hostname or ""
    if not host.startswith("127.") and host != "localhost":
        pytest.skip("the test server is not local")
    fd = os.open(LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


async def test_outage_raises_queue_unavailable_then_recovers(restart_lock: None) -> None:
    version, name = await _cluster()
    dsn = await create_test_database()
    queue = PostgresQueue(dsn, lease_ttl=600, connect_timeout=2, command_timeout=10)
    await queue.open()
    try:
        before = [make_message(i) for i in range(20)]
        await queue.enqueue_many(before)
        lease = await queue.register_worker()
        claimed = [m.id for m in await queue.claim(lease, 5, time.time())]
        await queue.wait_for_work(0)
        await asyncio.wait_for(queue.listener.connected.wait(), BOUND)
        await queue.wait_for_work(0)

        await _pg_ctl(version, name, "stop")
        try:
            down = [
                await _unavailable(queue.claim(lease, 5, time.time())),
                await _unavailable(queue.enqueue_many([make_message(100)])),
                await _unavailable(queue.mark_committing(lease, claimed)),
                await _unavailable(queue.heartbeat(lease)),  # time left: raise, not False
                await _unavailable(queue.counts()),
            ]
            assert all(isinstance(e, ConnectionError) and e.code for e in down)
            # The idle wait is a sleep: it never raises, the listener retries behind it.
            await asyncio.wait_for(queue.wait_for_work(0.05), BOUND)
        finally:
            await _pg_ctl(version, name, "start")

        # The server may still be starting (57P03): unavailable until it accepts.
        for _ in range(600):
            try:
                active = await asyncio.wait_for(queue.active_count(), BOUND)
                break
            except QueueUnavailable:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the queue did not come back after the restart")

        assert active == 20  # nothing enqueued before the outage was lost
        assert await queue.heartbeat(lease) is True
        assert await queue.mark_committing(lease, claimed) == set(claimed)
        outcomes = [OutcomeRecord(i, MessageState.DELIVERED, reply_code=250) for i in claimed]
        assert await queue.record_outcomes(lease, outcomes) == len(claimed)
        await asyncio.wait_for(queue.listener.connected.wait(), BOUND)
        await queue.wait_for_work(0)
        waiting = asyncio.create_task(queue.wait_for_work(3600))
        await asyncio.sleep(0)
        result = await queue.enqueue_many([make_message(100)])
        assert result[0].created
        await asyncio.wait_for(waiting, BOUND)  # woken by NOTIFY on the new connection
        assert (await queue.counts()).by_state == {"queued": 16, "delivered": 5}
    finally:
        await queue.close()
        await _ensure_running(version, name)
