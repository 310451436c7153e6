"""The engine over shared counters ([coordination] redis): a pause raised by another
process keeps this one's mail off that IP, /readyz says when Redis is away, and without
Redis the limits are divided by the live workers."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from dispatcher.config import Config, CoordinationConfig
from dispatcher.engine.coordination import open_coordination
from ip_pools.counters import pause_key
from ip_pools.redis_counters.counters import RedisCounters
from ip_pools.redis_counters.keyspace import Keyspace
from queues.sqlite.backend import SqliteQueue
from tests.support.engine import DEST, RuntimeFactory, make_config, payload
from tests.support.redis_server import SHARED_URL, RedisServer, unique_prefix
from tests.support.smtp_server import ServerFactory

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coord-keys")


def shared(config: Config, url: str, prefix: str) -> Config:
    c = CoordinationConfig(redis=url, key_prefix=prefix, timeout=0.3, rebuild_wait=0.3)
    return dataclasses.replace(config, coordination=c)


async def test_a_pause_raised_elsewhere_keeps_mail_off_that_ip(
    tmp_path: Path, key_dir: Path, smtp_server: ServerFactory, open_runtime: RuntimeFactory
) -> None:
    sink = await smtp_server()
    prefix = unique_prefix()
    config = shared(
        make_config(
            tmp_path,
            routes={DEST: f"127.0.0.1:{sink.port}"},
            key_dir=key_dir,
            ips=(("127.0.0.2", 1), ("127.0.0.3", 1)),
        ),
        SHARED_URL,
        prefix,
    )
    # Another process (here: its counters) pauses 127.0.0.2 for this destination.
    other = RedisCounters(SHARED_URL, worker_id="other", keyspace=Keyspace(prefix))
    await other.start(wait=5.0)
    try:
        await other.pause(pause_key("127.0.0.2", "mx:127.0.0.1"), time.time() + 60)
        rt = await open_runtime(config)
        await rt.enqueue([payload(i) for i in range(30)])
        stats = await rt.run(drain=True)
        assert stats.outcomes.get("delivered") == 30
        peers = [r.peer for r in sink.accepted()]
        assert peers.count("127.0.0.3") == 30 and "127.0.0.2" not in peers
    finally:
        await other.close()


async def test_readyz_says_when_redis_is_away(tmp_path: Path, key_dir: Path) -> None:
    server = RedisServer().start()
    queue = SqliteQueue(tmp_path / "q.db")
    await queue.open()
    try:
        config = shared(make_config(tmp_path, key_dir=key_dir), server.url, "t")
        lease = await queue.register_worker()
        coord = await open_coordination(config, queue, lease.worker_id, ["127.0.0.2"])
        assert coord.readiness() == "ok"
        server.stop()
        deadline = time.monotonic() + 5
        while coord.readiness() == "ok" and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert coord.readiness() == "unavailable"
        server.start()  # empty: rebuilt, then ready again
        assert coord.redis is not None and await coord.redis.wait_ready(10.0)
        assert coord.readiness() == "ok"
        await coord.close()
    finally:
        await queue.close()
        server.close()


async def test_without_redis_limits_are_divided_by_the_live_workers(
    tmp_path: Path, key_dir: Path
) -> None:
    queue = SqliteQueue(tmp_path / "q.db")
    await queue.open()
    try:
        config = make_config(tmp_path, key_dir=key_dir)
        leases = [await queue.register_worker() for _ in range(3)]
        coord = await open_coordination(config, queue, leases[0].worker_id, ["127.0.0.2"])
        assert coord.redis is None and coord.workers == 3
        assert abs(coord.share - 1 / 3) < 1e-9
        assert coord.readiness() == "ok"
        await coord.close()
    finally:
        await queue.close()
