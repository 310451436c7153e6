"""The Redis stream relay on every backend, against a private redis-server: batched
rounds, its position kept beside the stream, a relay restarted resumes there, and a Redis
restarted empty is refilled from the outbox's retention (same event ids)."""

from __future__ import annotations

import asyncio
import json
import time

import redis.asyncio as aioredis

from dispatcher.config import EventsConfig
from dispatcher.events.relay import StreamRelay
from queues.protocol import Event, Queue
from tests.support.redis_server import RedisServer


async def drain(relay: StreamRelay, queue: Queue) -> list[int]:
    """Rounds until the relay is at the outbox's end (PostgreSQL may hold rows back while
    any transaction of the cluster that is older than them runs: a shared test server may
    have long ones); the rounds' sizes."""
    rounds: list[int] = []
    target = await queue.last_event_seq()
    async with asyncio.timeout(120):
        while await relay.position() < target:
            n = await relay.run_once()
            if n:
                rounds.append(n)
            else:
                await asyncio.sleep(0.02)
    return rounds


async def _stream_ids(client: aioredis.Redis, stream: str) -> list[str]:
    entries = await client.xrange(stream)
    return [fields[b"id"].decode() for _, fields in entries]


async def test_relay_writes_batches_resumes_and_refills_an_empty_redis(
    queue: Queue, redis_server: RedisServer
) -> None:
    now = time.time()
    await queue.append_events([Event("ip.paused", now, {"n": i}) for i in range(2500)])
    config = EventsConfig(redis_url=redis_server.url, stream="t:events", batch=1000)
    client = aioredis.from_url(redis_server.url)
    try:
        relay = StreamRelay(queue, client, config)
        rounds = await drain(relay, queue)
        assert sum(rounds) == 2500 and max(rounds) <= 1000 and len(rounds) >= 3
        assert await relay.run_once() == 0
        ids = await _stream_ids(client, "t:events")
        expected = [e.id for e in await queue.read_events(0, 10_000)]
        assert ids == expected and len(set(ids)) == 2500
        assert await relay.position() == await queue.last_event_seq()
        first = json.loads((await client.xrange("t:events", count=1))[0][1][b"event"])
        assert first["type"] == "ip.paused" and first["data"] == {"n": 0}

        # A new relay (a restart) resumes from the position kept in Redis.
        await queue.append_events([Event("ip.resumed", now, {})])
        again = StreamRelay(queue, client, config)
        assert await drain(again, queue) == [1]
        assert len(await _stream_ids(client, "t:events")) == 2501
    finally:
        await client.aclose()

    redis_server.restart()  # empty: no stream, no position
    client = aioredis.from_url(redis_server.url)
    try:
        relay = StreamRelay(queue, client, config)
        await drain(relay, queue)
        refilled = await _stream_ids(client, "t:events")
        assert refilled == [e.id for e in await queue.read_events(0, 10_000)]
        assert len(refilled) == 2501
    finally:
        await client.aclose()
