"""Lane against the shared SMTP test server, with real marks (MarkWriter on a SQLite queue):
session reuse and limits, the mark durable before every dot, refused marks, MX fallback,
unsignable messages, send-ahead, closing, idle sessions."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dispatcher.config import Client
from dispatcher.engine.group_commit import MarkWriter
from dispatcher.engine.lane import Attempt, Lane, LaneSettings, Work
from dispatcher.routing.circuit import CircuitBreaker
from dispatcher.routing.router import MxHost
from dispatcher.smtp.session import Phase, SessionTimeouts
from ip_pools import Pick, PlatformDomain, SourceIp
from queues.protocol import ClaimedMessage, Lease, MessageState
from queues.sqlite.backend import SqliteQueue
from tests.support.queues import messages
from tests.support.smtp_server import Message, ServerFactory, SmtpServer

SOURCE = SourceIp("127.0.0.2", "mta1.platform.example")
PICK = Pick("main", SOURCE, PlatformDomain("send1.platform.example"))


@dataclass
class Bench:
    """A real queue with claimed messages, a running MarkWriter, and what the lane reported."""

    path: Path
    queue: SqliteQueue
    lease: Lease
    claimed: list[ClaimedMessage]
    marks: MarkWriter
    attempts: list[Attempt] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    reported: asyncio.Event = field(default_factory=asyncio.Event)

    def done(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        self.reported.set()

    def spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def until_attempts(self, n: int, within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while len(self.attempts) < n:
                self.reported.clear()
                await self.reported.wait()

    def state_now(self, message_id: str) -> str:
        """The state on disk, read by another connection (what a crash would leave)."""
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            row = db.execute("SELECT state FROM messages WHERE id = ?", (message_id,)).fetchone()
        return str(row[0])

    def lane(
        self,
        *,
        sessions: int = 2,
        per_session: int = 100,
        send_ahead: bool = False,
        client: Client = Client.PIPELINING,
        prepare: Callable[[Work], bytes] = lambda w: w.message.body,
        lease: MarkWriter | None = None,
    ) -> Lane:
        settings = LaneSettings(
            sessions_per_host=sessions,
            messages_per_session=per_session,
            timeouts=SessionTimeouts(connect=2.0, command=2.0, data=5.0, mark=5.0),
            starttls=False,
            client=client,
            send_ahead=send_ahead,
            idle_timeout=0.3,
        )
        marks = lease or self.marks
        return Lane(
            (SOURCE.address, "dest.example"),
            settings,
            asyncio.Semaphore(20),
            CircuitBreaker(failures=1, open_seconds=60.0),
            prepare,
            marks.request,
            self.done,
            self.spawn,
        )


def work(m: ClaimedMessage, *ports: int) -> Work:
    hosts = tuple(MxHost(f"mx{p}.dest.example", ("127.0.0.1",), p, 10) for p in ports)
    return Work(m, PICK, f"b-{m.id}@send1.platform.example", hosts)


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    path = tmp_path / "queue.db"
    queue = SqliteQueue(path)
    await queue.open()
    await queue.enqueue_many(messages(20))
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, 20, time.time())
    marks = MarkWriter(queue, lease)
    b = Bench(path, queue, lease, claimed, marks)
    b.tasks.append(asyncio.create_task(marks.run()))
    yield b
    for t in b.tasks:
        t.cancel()
    await asyncio.gather(*b.tasks, return_exceptions=True)
    await queue.close()


def codes(attempts: list[Attempt]) -> list[tuple[str, int | None]]:
    return [(a.result.phase, a.result.code) for a in attempts]


@pytest.mark.parametrize("client", list(Client))
async def test_delivers_with_reused_sessions_each_dot_after_a_durable_mark(
    bench: Bench, smtp_server: ServerFactory, client: Client
) -> None:
    at_dot: dict[str, str] = {}

    def seen(m: Message) -> None:  # runs when the dot has arrived, before the reply
        msg_id = m.mail_from.split("@")[0].removeprefix("b-")
        at_dot[msg_id] = bench.state_now(msg_id)

    s = await smtp_server(on_message=seen)
    lane = bench.lane(sessions=2, client=client)
    for m in bench.claimed:
        lane.put(work(m, s.port))
    await bench.until_attempts(20)
    assert codes(bench.attempts) == [(Phase.DOT, 250)] * 20
    assert sorted(a.work.message.id for a in bench.attempts) == sorted(at_dot)
    assert set(at_dot.values()) == {MessageState.COMMITTING.value}
    assert 1 <= s.connections <= 2 and s.peers[0] == SOURCE.address
    assert all(a.mx_host == f"mx{s.port}.dest.example" for a in bench.attempts)


async def test_a_session_carries_at_most_messages_per_session(
    bench: Bench, smtp_server: ServerFactory
) -> None:
    s = await smtp_server()
    lane = bench.lane(sessions=1, per_session=3)
    for m in bench.claimed[:7]:
        lane.put(work(m, s.port))
    await bench.until_attempts(7)
    assert codes(bench.attempts) == [(Phase.DOT, 250)] * 7
    await s.wait_until(lambda: s.connections == 3 and all(c.closed for c in s.sessions))
    assert [len(c.messages) for c in s.sessions] == [3, 3, 1]
    assert len(s.commands("QUIT")) == 3


async def test_a_refused_mark_releases_the_message_without_its_dot(
    bench: Bench, smtp_server: ServerFactory
) -> None:
    s = await smtp_server()
    stranger = MarkWriter(bench.queue, await bench.queue.register_worker())  # holds nothing
    bench.tasks.append(asyncio.create_task(stranger.run()))
    lane = bench.lane(lease=stranger)
    lane.put(work(bench.claimed[0], s.port))
    await bench.until_attempts(1)
    (a,) = bench.attempts
    assert a.result.phase == Phase.MARK and not a.result.dot_written
    assert s.received == []
    assert bench.state_now(bench.claimed[0].id) == MessageState.SENDING.value


async def test_a_dead_mx_falls_through_to_the_next_and_a_5xx_greeting_stops_there(
    bench: Bench, smtp_server: ServerFactory
) -> None:
    dead = await smtp_server()
    dead_port = dead.port
    await dead.stop()
    live = await smtp_server()
    refusing = await smtp_server(greeting="554 5.7.1 not from you")
    lane = bench.lane(sessions=1)
    lane.put(work(bench.claimed[0], dead_port, live.port))
    await bench.until_attempts(1)
    assert codes(bench.attempts) == [(Phase.DOT, 250)]
    assert bench.attempts[0].mx_host == f"mx{live.port}.dest.example"
    other = bench.lane(sessions=1)  # a lane of its own: the first one's session is open
    other.put(work(bench.claimed[1], refusing.port, live.port))
    await bench.until_attempts(2)
    assert codes(bench.attempts[1:]) == [(Phase.GREETING, 554)]
    assert live.connections == 1  # a 5xx greeting is the sender's problem: no other MX


async def test_an_unsignable_message_fails_locally_and_the_session_goes_on(
    bench: Bench, smtp_server: ServerFactory
) -> None:
    bad = bench.claimed[1].id

    def prepare(w: Work) -> bytes:
        if w.message.id == bad:
            raise ValueError("no key for this domain")
        return w.message.body

    s = await smtp_server()
    lane = bench.lane(sessions=1, prepare=prepare)
    for m in bench.claimed[:3]:
        lane.put(work(m, s.port))
    await bench.until_attempts(3)
    by_id = {a.work.message.id: a.result for a in bench.attempts}
    assert (by_id[bad].phase, by_id[bad].code) == (Phase.LOCAL, 554)
    assert "cannot sign" in by_id[bad].text
    assert len(s.accepted()) == 2 and s.connections == 1


async def test_send_ahead_rides_the_dot_and_a_drop_releases_the_look_ahead(
    bench: Bench, smtp_server: ServerFactory
) -> None:
    s = await smtp_server(dot=lambda t: "drop" if t.messages == 3 else None)
    lane = bench.lane(sessions=1, send_ahead=True)
    for m in bench.claimed[:8]:
        lane.put(work(m, s.port))
    await bench.until_attempts(8)
    results = {a.work.message.id: a.result for a in bench.attempts}
    third = bench.claimed[2].id
    assert results[third].phase == Phase.DOT and results[third].dot_written
    assert results[third].code is None  # no reply to its dot: ambiguous for the engine
    released = [i for i, r in results.items() if r.phase == Phase.MARK]
    assert len(released) == 1 and "released" in results[released[0]].text
    assert released[0] not in _server_ids(s)  # its dot never went out
    delivered = [i for i, r in results.items() if r.code == 250]
    assert len(delivered) == 6 and s.connections == 2
    assert [m.ending for m in s.received].count("unacked") == 1
    # One flight per message on the first connection, after its first envelope.
    first = s.sessions[0]
    assert len(first.messages) == 3 and first.flights <= 1 + 1 + 3


async def test_close_returns_the_unstarted_and_the_started_finish(
    bench: Bench, smtp_server: ServerFactory
) -> None:
    s = await smtp_server(dot="sleep 0.3 250 2.0.0 ok")
    lane = bench.lane(sessions=1)
    for m in bench.claimed[:10]:
        lane.put(work(m, s.port))
    await s.wait_until(lambda: len(s.received) >= 1)
    returned = lane.close()
    assert lane.closing and 0 < len(returned) < 10
    await asyncio.gather(*bench.tasks[1:])  # the session loop ends after its message
    assert codes(bench.attempts) == [(Phase.DOT, 250)] * (10 - len(returned))
    assert {w.message.id for w in returned}.isdisjoint(a.work.message.id for a in bench.attempts)
    assert lane.sessions == 0 and len(lane) == 0


async def test_an_idle_session_is_closed_after_the_idle_timeout(
    bench: Bench, smtp_server: ServerFactory
) -> None:
    s = await smtp_server()
    lane = bench.lane(sessions=1)
    lane.put(work(bench.claimed[0], s.port))
    await bench.until_attempts(1)
    await s.wait_until(lambda: s.sessions[0].closed, within=10)
    assert s.commands("QUIT") and lane.sessions == 0


def _server_ids(s: SmtpServer) -> set[str]:
    return {m.mail_from.split("@")[0].removeprefix("b-") for m in s.received}
