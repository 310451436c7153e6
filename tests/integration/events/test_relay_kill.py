"""No event is lost across SIGKILLs: a real `maildispatch run` and a real
`maildispatch relay` are both SIGKILLed mid-broadcast (and Redis is restarted empty once);
in the end every event of the outbox is in the stream (at least once), every outcome in
the store has its event there, and each message's events keep their order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from dispatcher.config import load_config
from dispatcher.message.verp import Verp
from queues.protocol import MessageState
from tests.chaos.faults import FaultPlan
from tests.chaos.setup import payload, write_config
from tests.chaos.sink import SinkFactory
from tests.support.engine import RuntimeFactory
from tests.support.polling import until
from tests.support.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[3]
S = MessageState
FROM_OUTCOME = {S.DEFERRED, S.DELIVERED, S.BOUNCED, S.FAILED, S.AMBIGUOUS}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    dsn = ""
    if request.param == "postgres":
        from tests.support.postgres import create_test_database

        dsn = await create_test_database()
    yield request.param, dsn


async def _start(config: Path, command: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher.cli", command, "--config", str(config),
        cwd=REPO, env=dict(os.environ), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


@pytest.mark.slow
async def test_engine_and_relay_sigkills_lose_no_event(
    tmp_path: Path,
    backend: tuple[str, str],
    recording_sink: SinkFactory,
    open_runtime: RuntimeFactory,
    redis_server: RedisServer,
) -> None:
    kind, dsn = backend
    verp = Verp.from_file(tmp_path / "verp.key", "b")
    sink = await recording_sink(tmp_path / "sink.jsonl", verp, FaultPlan(seed=17, rate=0.3))
    path = write_config(tmp_path, sink_port=sink.port, backend=kind, dsn=dsn)
    with path.open("a") as fh:
        fh.write(
            f'\n[events]\nredis_url = "{redis_server.url}"\nstream = "t:ev"\nbatch = 50\n'
            'poll_interval = "20ms"\n'
        )
    rt = await open_runtime(load_config(path))
    n = 400
    ids = [r.id for r in await rt.enqueue([payload(17, i) for i in range(n)])]
    client = aioredis.from_url(redis_server.url)

    async def stream_len() -> int:
        try:
            return int(await client.xlen("t:ev"))
        except (OSError, aioredis.ConnectionError):
            return 0

    try:
        for round_ in range(3):
            engine = await _start(path, "run")
            relay = await _start(path, "relay")
            try:
                # Both killed while events flow: the relay once it has moved some.
                goal = 30 * (round_ + 1)

                async def moved(goal: int = goal) -> bool:
                    return await stream_len() >= goal

                await until(moved, 60, 0.01)
            finally:
                await _kill(relay)
                await _kill(engine)
            lease_ttl = float(getattr(rt.queue, "lease_ttl", 0.0))
            await rt.queue.recover(time.time() + lease_ttl + 1, None)
            if round_ == 1:
                await client.aclose()
                redis_server.restart()  # empty: the relay must refill from the outbox
                client = aioredis.from_url(redis_server.url)

        await asyncio.wait_for(rt.run(drain=True), timeout=120)
        relay = await _start(path, "relay")
        try:
            target = await rt.queue.last_event_seq()

            async def caught_up() -> bool:
                return int(await client.get("t:ev:position") or 0) >= target

            await until(caught_up, 120, 0.05)
        finally:
            relay.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                await relay.wait()
        assert relay.returncode == 0

        entries = await client.xrange("t:ev")
        streamed = [json.loads(f[b"event"]) for _, f in entries]
        by_id = {e["id"]: e for e in streamed}
        outbox = []
        after = 0
        while page := await rt.queue.read_events(after, 1000):
            outbox += page
            after = page[-1].seq
        assert {e.id for e in outbox} <= set(by_id), "an event never reached the stream"
        # Per message, the stream's first sighting of each event keeps the outbox order.
        seen: dict[str, list[int]] = defaultdict(list)
        first: set[str] = set()
        for e in streamed:
            if e["message_id"] and e["id"] not in first:
                first.add(e["id"])
                seen[e["message_id"]].append(e["seq"])
        assert all(seqs == sorted(seqs) for seqs in seen.values())
        for rec in await rt.queue.get(ids):
            if rec.state in FROM_OUTCOME:
                got = [by_id[f"ev_{s}"]["type"] for s in seen[rec.id]]
                assert got and got[-1] == f"message.{rec.state.value}", (rec, got)
    finally:
        await client.aclose()
