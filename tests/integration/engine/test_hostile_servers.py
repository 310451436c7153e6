"""Hostile SMTP servers beside a healthy one (issue 10): none may stall, poison or crash the
engine. Each case asserts the stored state of the hostile destination's messages and that
the healthy destination's messages are delivered while the hostile server is still at it.

The hostile server listens on 127.0.0.1, the healthy one on 127.0.0.10; the engine sends
from 127.0.0.2-4. Both come from tests/support/smtp_server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dispatcher.engine.runtime import Runtime
from queues.protocol import MessageRecord, MessageState
from tests.support.engine import RuntimeFactory, make_config, payload
from tests.support.smtp_server import Action, Behaviour, ServerFactory, SmtpServer, Tarpit

HOSTILE = ("hostile-a.example", "hostile-b.example")  # names are free: both point at one MX
HEALTHY = "healthy.example"
SOURCES = (("127.0.0.2", 1), ("127.0.0.3", 1), ("127.0.0.4", 1))


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-keys")


@dataclass
class Run:
    """An engine running against a hostile and a healthy server."""

    rt: Runtime
    hostile: SmtpServer
    healthy: SmtpServer
    hostile_ids: list[str]
    healthy_ids: list[str]
    stop: asyncio.Event
    task: asyncio.Task[Any]
    started: float = field(default_factory=time.monotonic)

    async def healthy_delivered(self, within: float) -> float:
        """Seconds until every healthy message was accepted at its server (fails after
        `within`)."""
        deadline = time.monotonic() + within
        while len(self.healthy.accepted()) < len(self.healthy_ids):
            assert not self.task.done(), self.task.result()
            assert time.monotonic() < deadline, (
                f"{len(self.healthy.accepted())} of {len(self.healthy_ids)} healthy messages "
                f"delivered after {within}s"
            )
            await asyncio.sleep(0.02)
        return time.monotonic() - self.started

    async def records(self, ids: list[str]) -> list[MessageRecord]:
        return await self.rt.queue.get(ids)

    async def settled(self, ids: list[str], within: float) -> list[MessageRecord]:
        """The records once none is sending/committing (fails after `within`)."""
        deadline = time.monotonic() + within
        while True:
            recs = await self.records(ids)
            busy = [r for r in recs if r.state in (MessageState.SENDING, MessageState.COMMITTING)]
            if not busy:
                return recs
            assert time.monotonic() < deadline, [(r.state, r.last_reply_text) for r in busy]
            await asyncio.sleep(0.05)

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=60)


Start = Callable[..., "asyncio.Future[Run]"]


@pytest.fixture
async def start(
    tmp_path: Path, key_dir: Path, smtp_server: ServerFactory, open_runtime: RuntimeFactory
) -> AsyncIterator[Callable[..., Any]]:
    runs: list[Run] = []

    async def start_(
        behaviour: Behaviour | None = None,
        *,
        hostile_n: int = 6,
        healthy_n: int = 10,
        dispatch: dict[str, Any] | None = None,
        smtp: dict[str, Any] | None = None,
        **replies: Action,
    ) -> Run:
        hostile = await smtp_server(behaviour, host="127.0.0.1", **replies)
        healthy = await smtp_server(host="127.0.0.10")
        routes = {d: f"127.0.0.1:{hostile.port}" for d in HOSTILE}
        routes[HEALTHY] = f"127.0.0.10:{healthy.port}"
        config = make_config(
            tmp_path, routes=routes, ips=SOURCES, key_dir=key_dir, dispatch=dispatch or {}
        )
        if smtp:
            from dataclasses import replace

            config = replace(config, smtp=replace(config.smtp, **smtp))
        rt = await open_runtime(config)
        hostile_p = [
            payload(i, to=f"r{i}@{HOSTILE[i % 2]}", priority=10) for i in range(hostile_n)
        ]
        healthy_p = [payload(1000 + i, to=f"r{i}@{HEALTHY}") for i in range(healthy_n)]
        hostile_ids = [r.id for r in await rt.enqueue(hostile_p)]
        healthy_ids = [r.id for r in await rt.enqueue(healthy_p)]
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run(stop=stop))
        run = Run(rt, hostile, healthy, hostile_ids, healthy_ids, stop, task)
        runs.append(run)
        return run

    yield start_
    for run in runs:
        run.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run.task, timeout=60)


def _open_sessions(server: SmtpServer) -> int:
    return sum(1 for c in server.sessions if not c.closed)


# -- finding 3: slow servers cannot take every session --------------------------------------


@pytest.mark.xfail(strict=True, reason="issue 10 finding 3: the stall, shown before the fix")
async def test_a_tarpit_cannot_take_every_session(start: Callable[..., Any]) -> None:
    """A tarpit answering each command just under the command timeout, reached by two
    domains from three source IPs (6 lanes x 4 sessions > max_sessions 6): before issue 10
    it held every session and the healthy destination waited for it."""
    slow = Tarpit("250 2.0.0 ok", interval=0.3)  # 13 bytes: 3.9 s, under the 5 s timeout
    run = await start(
        hostile_n=30,
        dispatch={"max_sessions": 6, "sessions_per_host": 4},
        mail=slow,
        rcpt=slow,
    )
    # The tarpit has its sessions before the healthy mail gets any.
    deadline = time.monotonic() + 10
    while _open_sessions(run.hostile) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    took = await run.healthy_delivered(within=8.0)
    assert _open_sessions(run.hostile) >= 1, "the tarpit was still holding sessions"
    assert took < 8.0
    await run.finish()
    recs = await run.records(run.healthy_ids)
    assert {r.state for r in recs} == {MessageState.DELIVERED}
