"""The worker registry's live count (both backends): what processes counting limits locally
divide them by."""

from __future__ import annotations

import time

from queues.protocol import DEFAULT_LEASE_TTL, Queue


async def test_live_workers_counts_live_leases(queue: Queue) -> None:
    now = time.time()
    assert await queue.live_workers(now) == 0
    await queue.register_worker()
    second = await queue.register_worker()
    assert await queue.live_workers(time.time()) == 2
    assert await queue.heartbeat(second)
    # Long after the last heartbeat no lease is live any more.
    assert await queue.live_workers(time.time() + 10 * DEFAULT_LEASE_TTL) == 0
