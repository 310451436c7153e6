"""A SIGKILL never leaves an outcome without its event.

A real `maildispatch run` sends to a faulty sink (refusals, deferrals, dropped connections)
and is SIGKILLed at moments drawn from a seed, while outcome batches are being written. The
store is then checked: every message whose state came from an outcome has that outcome's
event as its latest `message.*` event; after recovery and a drain, each message has exactly
one event per counted attempt, and its latest event is its final state.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatcher.config import load_config
from dispatcher.message.verp import Verp
from queues.protocol import Event, MessageState, Queue
from tests.chaos.faults import FaultPlan
from tests.chaos.setup import payload, write_config
from tests.chaos.sink import SinkFactory
from tests.support.engine import RuntimeFactory

REPO = Path(__file__).resolve().parents[3]
S = MessageState
# States an outcome write (or recovery, or expiry) sets and that raise an event.
FROM_OUTCOME = {S.DEFERRED, S.DELIVERED, S.BOUNCED, S.FAILED, S.AMBIGUOUS}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    dsn = ""
    if request.param == "postgres":
        from tests.support.postgres import create_test_database

        dsn = await create_test_database()
    yield request.param, dsn


async def message_events(queue: Queue) -> dict[str, list[Event]]:
    by_id: dict[str, list[Event]] = defaultdict(list)
    after = 0
    while page := await queue.read_events(after, 1000):
        for e in page:
            if e.message_id is not None and e.kind.startswith("message."):
                by_id[e.message_id].append(e)
        after = page[-1].seq
    return by_id


async def check_latest_event_is_the_state(queue: Queue, ids: list[str]) -> int:
    """Every message in a state set by an outcome has it as its latest event; how many."""
    events = await message_events(queue)
    checked = 0
    for rec in await queue.get(ids):
        if rec.state in FROM_OUTCOME:
            got = events.get(rec.id)
            assert got, f"{rec.id} is {rec.state} with no event"
            assert got[-1].kind == f"message.{rec.state.value}", (rec, got[-1])
            checked += 1
        elif rec.attempts == 0:
            assert rec.id not in events, (rec, events[rec.id])
    return checked


async def _run_and_kill(config: Path, queue: Queue, after_outcomes: int) -> int:
    """Start a worker; SIGKILL it once `after_outcomes` messages have left `queued`."""
    env = dict(os.environ)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher.cli", "run", "--config", str(config),
        cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            while True:
                counts = (await queue.counts()).by_state
                done = sum(n for s, n in counts.items() if S(s) in FROM_OUTCOME)
                if done >= after_outcomes or proc.returncode is not None:
                    break
                await asyncio.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return done


@pytest.mark.slow
async def test_sigkill_never_leaves_an_outcome_without_its_event(
    tmp_path: Path,
    backend: tuple[str, str],
    recording_sink: SinkFactory,
    open_runtime: RuntimeFactory,
) -> None:
    kind, dsn = backend
    rng = random.Random(13)
    verp = Verp.from_file(tmp_path / "verp.key", "b")
    sink = await recording_sink(tmp_path / "sink.jsonl", verp, FaultPlan(seed=13, rate=0.4))
    path = write_config(tmp_path, sink_port=sink.port, backend=kind, dsn=dsn)
    rt = await open_runtime(load_config(path))
    n = 600
    results = await rt.enqueue([payload(13, i) for i in range(n)])
    ids = [r.id for r in results]
    for round_ in range(3):
        done = await _run_and_kill(path, rt.queue, rng.randrange(50, 150) * (round_ + 1))
        assert done < n  # killed mid-run
        await check_latest_event_is_the_state(rt.queue, ids)
        lease_ttl = float(getattr(rt.queue, "lease_ttl", 0.0))
        # PostgreSQL: the killed worker's lease must have expired; SQLite: its lock died.
        await rt.queue.recover(time.time() + lease_ttl + 1, None)
        assert await check_latest_event_is_the_state(rt.queue, ids) > 0

    await asyncio.wait_for(rt.run(drain=True), timeout=120)

    events = await message_events(rt.queue)
    for rec in await rt.queue.get(ids):
        got = events.get(rec.id, [])
        expired = [e for e in got if e.data.get("reason") == "expired"]
        assert len(got) == rec.attempts + len(expired), (rec, got)
        assert rec.state in FROM_OUTCOME  # deferred: its retry was not yet due
        assert got[-1].kind == f"message.{rec.state.value}"
