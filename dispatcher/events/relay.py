"""The Redis stream relay: moves events from the outbox to a Redis stream, in batches.

Each round reads up to `batch` events after the relay's position and writes them with the
new position in one MULTI/EXEC pipeline (`XADD ... MAXLEN ~`, then `SET STREAM:position`),
so the stream and the position never disagree. A relay killed mid-round resends from the
position (at least once: consumers deduplicate by the event's `id`); a Redis restarted
empty has no position, so the relay starts again from the oldest event the outbox keeps
(its retention) and refills the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from dispatcher.config import Config, ConfigError, EventsConfig
from dispatcher.engine.runtime import make_queue
from dispatcher.events.payload import event_object
from queues.protocol import Queue

log = logging.getLogger(__name__)


class StreamRelay:
    """One relay for one stream (run one per stream; two would only duplicate entries)."""

    def __init__(self, queue: Queue, redis: Any, config: EventsConfig) -> None:
        self.queue = queue
        self.redis = redis
        self.config = config
        self.position_key = f"{config.stream}:position"
        self.relayed = 0

    async def position(self) -> int:
        raw = await self.redis.get(self.position_key)
        return int(raw) if raw is not None else 0

    async def run_once(self) -> int:
        """One round: how many events were written to the stream."""
        after = await self.position()
        events = await self.queue.read_settled_events(after, self.config.batch)
        if not events:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            for e in events:
                pipe.xadd(
                    self.config.stream,
                    {"id": e.id, "type": e.kind, "event": json.dumps(event_object(e))},
                    maxlen=self.config.stream_maxlen,
                    approximate=True,
                )
            pipe.set(self.position_key, events[-1].seq)
            await pipe.execute()
        self.relayed += len(events)
        return len(events)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; a Redis or store error is logged and retried."""
        backoff = self.config.poll_interval
        while not stop.is_set():
            try:
                n = await self.run_once()
                backoff = self.config.poll_interval
            except Exception as e:  # the relay outlives a Redis or store outage
                log.warning("relay round failed (%s); retrying", type(e).__name__)
                n = 0
                backoff = min(backoff * 2, 5.0)
            if n < self.config.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)


async def serve_relay(config: Config, stop: asyncio.Event) -> int:
    """`maildispatch relay`: open the store and Redis, relay until `stop`; returns how many
    events were relayed."""
    import redis.asyncio as aioredis

    if not config.events.redis_url:
        raise ConfigError(field="events.redis_url", reason="is required to run the relay")
    queue = make_queue(config)
    await queue.open()
    client = aioredis.from_url(config.events.redis_url)
    try:
        relay = StreamRelay(queue, client, config.events)
        log.info("relaying events to stream %s", config.events.stream)
        await relay.run(stop)
        return relay.relayed
    finally:
        await client.aclose()
        await queue.close()
