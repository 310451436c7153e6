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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from dispatcher.engine.runtime import Runtime
from queues.protocol import MessageRecord, MessageState
from tests.support.engine import RuntimeFactory, make_config, payload
from tests.support.smtp_server import (
    Action,
    Behaviour,
    Endless,
    Raw,
    ServerFactory,
    SmtpServer,
    Tarpit,
)

HOSTILE = ("hostile-a.example", "hostile-b.example")  # names are free: both point at one MX
HEALTHY = "healthy.example"
REPO = Path(__file__).resolve().parents[3]
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
        postgres: bool = False,
        **replies: Action,
    ) -> Run:
        hostile = await smtp_server(behaviour, host="127.0.0.1", **replies)
        healthy = await smtp_server(host="127.0.0.10")
        routes = {d: f"127.0.0.1:{hostile.port}" for d in HOSTILE}
        routes[HEALTHY] = f"127.0.0.10:{healthy.port}"
        queue = None
        if postgres:
            from tests.support.postgres import create_test_database

            queue = {"backend": "postgres", "dsn": await create_test_database()}
        config = make_config(
            tmp_path,
            routes=routes,
            ips=SOURCES,
            key_dir=key_dir,
            dispatch=dispatch or {},
            queue=queue,
        )
        if smtp:
            config = replace(config, smtp=replace(config.smtp, **smtp))
        rt = await open_runtime(config)
        hostile_p = [payload(i, to=f"r{i}@{HOSTILE[i % 2]}", priority=10) for i in range(hostile_n)]
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


@pytest.mark.slow
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


async def test_a_tarpit_gets_no_more_than_its_share_of_sessions(start: Callable[..., Any]) -> None:
    """The cap per resolved MX address holds across source IPs and recipient domains."""
    slow = Tarpit("250 2.0.0 ok", interval=0.2)
    peak = 0

    def count(turn: Any) -> None:
        nonlocal peak
        peak = max(peak, _open_sessions(turn.server))

    run = await start(
        hostile_n=20,
        dispatch={"max_sessions": 8, "sessions_per_host": 4, "mx_address_share": 0.25},
        mail=lambda turn: count(turn) or slow,
    )
    await run.healthy_delivered(within=15.0)
    await run.finish()
    assert 1 <= peak <= 2, peak  # 25% of 8 sessions


# -- the message deadline ends at the dot; the session deadline between messages -------------


async def test_a_byte_a_second_tarpit_meets_the_message_deadline(start: Callable[..., Any]) -> None:
    """Each reply under the command timeout, the message over its deadline: deferred."""
    slow = Tarpit("250 2.1.0 ok", interval=0.3)  # 3.9 s a reply, the timeout is 5 s
    run = await start(hostile_n=4, smtp={"message_deadline": 2.0}, mail=slow)
    await run.healthy_delivered(within=10.0)
    recs = await run.settled(run.hostile_ids, within=30.0)
    await run.finish()
    assert {r.state for r in recs} == {MessageState.DEFERRED}
    assert all(
        "message deadline (2s) passed before the final dot" in (r.last_reply_text or "")
        for r in recs
    ), [r.last_reply_text for r in recs]
    assert run.hostile.received == []


async def test_the_message_deadline_never_runs_inside_the_dot_wait(
    start: Callable[..., Any],
) -> None:
    """Accepts the message, then never answers the dot: ambiguous after data_timeout, never
    a deferral at the (shorter) message deadline, which would resend a delivered message."""
    run = await start(
        hostile_n=2, smtp={"message_deadline": 0.5, "data_timeout": 3.0}, dot="silent"
    )
    began = time.monotonic()
    await run.healthy_delivered(within=10.0)
    assert _open_sessions(run.hostile) >= 1, "the silent server still held its sessions"
    recs = await run.settled(run.hostile_ids, within=30.0)
    took = time.monotonic() - began
    await run.finish()
    assert {r.state for r in recs} == {MessageState.AMBIGUOUS}
    assert took >= 2.5, took  # data_timeout, not the message deadline
    assert {m.ending for m in run.hostile.received} == {"unacked"}


async def test_an_old_session_carries_no_new_message(
    smtp_server: ServerFactory, open_runtime: RuntimeFactory, tmp_path: Path, key_dir: Path
) -> None:
    server = await smtp_server(host="127.0.0.10", dot="sleep 0.2 250 2.0.0 ok")
    config = make_config(
        tmp_path,
        routes={HEALTHY: f"127.0.0.10:{server.port}"},
        key_dir=key_dir,
        dispatch={"sessions_per_host": 1},
    )
    config = replace(config, smtp=replace(config.smtp, session_deadline=0.5, send_ahead=False))
    rt = await open_runtime(config)
    ids = [r.id for r in await rt.enqueue([payload(i, to=f"r{i}@{HEALTHY}") for i in range(8)])]
    await rt.run(drain=True)
    assert {r.state for r in await rt.queue.get(ids)} == {MessageState.DELIVERED}
    assert len(server.accepted()) == 8
    assert len(server.sessions) >= 3  # ~0.2 s a message, a new session every 0.5 s


# -- finding 1: invalid UTF-8 and control bytes in replies, at every phase -------------------

BAD = b"\xff\xfe\x1b[31m\x00\x07"


@pytest.mark.parametrize(
    ("phase", "reply", "state"),
    [
        ("greeting", b"421 4.3.2 " + BAD + b" busy\r\n", MessageState.DEFERRED),
        ("ehlo", b"451 4.3.0 " + BAD + b"\r\n", MessageState.DEFERRED),
        ("mail", b"451 4.3.0 " + BAD + b"\r\n", MessageState.DEFERRED),
        ("rcpt", b"550 5.1.1 " + BAD + b"\r\n", MessageState.BOUNCED),
        ("data", b"451 4.3.0 " + BAD + b"\r\n", MessageState.DEFERRED),
        ("dot", b"250-2.0.0 " + BAD + b"\r\n250 ok " + BAD + b"\r\n", MessageState.DELIVERED),
        ("dot", b"550 5.1.1 " + BAD + b"\r\n", MessageState.BOUNCED),
    ],
)
@pytest.mark.parametrize("client", ["pipelining", "aiosmtplib"])
async def test_invalid_utf8_and_control_bytes_in_replies(
    start: Callable[..., Any], phase: str, reply: bytes, state: MessageState, client: str
) -> None:
    run = await start(hostile_n=4, smtp={"client": client}, **{phase: Raw(reply)})
    await run.healthy_delivered(within=15.0)
    recs = await run.settled(run.hostile_ids, within=30.0)
    await run.finish()
    assert {r.state for r in recs} == {state}, [(r.state, r.last_reply_text) for r in recs]
    for r in recs:
        text = r.last_reply_text or ""
        text.encode("utf-8")
        assert not any(c in text for c in "\x00\x07\x1b"), text
        assert "\ufffd" in text, text  # what was readable stays, the rest is marked
    if state == MessageState.DELIVERED:
        assert len(run.hostile.accepted()) == 4


@pytest.mark.parametrize("postgres", [False, pytest.param(True, marks=pytest.mark.postgres)])
async def test_one_poisoned_reply_does_not_block_the_others(
    start: Callable[..., Any], postgres: bool
) -> None:
    """The issue's run: 41 messages, one dot answered `550 5.1.1 \\xff\\xfe`; before, all
    41 stayed committing (40 delivered) and a restart with ambiguous=retry sent 40 again."""

    def dot(turn: Any) -> Action | None:
        return Raw(b"550 5.1.1 \xff\xfe\r\n") if turn.messages == 7 else None

    run = await start(hostile_n=41, postgres=postgres, dot=dot)
    await run.healthy_delivered(within=20.0)
    recs = await run.settled(run.hostile_ids, within=30.0)
    await run.finish()
    states = sorted(r.state for r in recs)
    assert states.count(MessageState.DELIVERED) == 40
    assert states.count(MessageState.BOUNCED) == 1
    (bounced,) = [r for r in recs if r.state == MessageState.BOUNCED]
    assert bounced.last_reply_text == "550 5.1.1 \ufffd\ufffd"
    assert len(run.hostile.accepted()) == 40


# -- finding 2: an endless multi-line reply ------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "state"),
    [
        ("ehlo", MessageState.DEFERRED),
        ("mail", MessageState.DEFERRED),
        ("dot", MessageState.AMBIGUOUS),  # the dot was written: its reply never completed
    ],
)
@pytest.mark.parametrize("client", ["pipelining", "aiosmtplib"])
async def test_an_endless_reply_is_cut_and_the_link_dropped(
    start: Callable[..., Any], phase: str, state: MessageState, client: str
) -> None:
    run = await start(hostile_n=3, smtp={"client": client}, **{phase: Endless()})
    await run.healthy_delivered(within=15.0)
    recs = await run.settled(run.hostile_ids, within=30.0)
    await run.finish()
    assert {r.state for r in recs} == {state}, [(r.state, r.last_reply_text) for r in recs]
    assert all("reply too long" in (r.last_reply_text or "") for r in recs), [
        r.last_reply_text for r in recs
    ]


# -- replies ahead of commands, 421 mid-pipeline, a drop after RCPT -------------------------


async def test_replies_ahead_of_commands_are_not_taken_for_answers(
    start: Callable[..., Any],
) -> None:
    """Replies sent with the greeting, before any command: the link is dropped, never a
    reply paired with the wrong command."""
    ahead = Raw(b"220 hostile ESMTP\r\n250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n")
    run = await start(hostile_n=3, greeting=ahead)
    await run.healthy_delivered(within=15.0)
    recs = await run.settled(run.hostile_ids, within=30.0)
    await run.finish()
    assert {r.state for r in recs} == {MessageState.DEFERRED}
    assert run.hostile.received == []


async def test_an_early_250_in_the_body_is_no_delivery(start: Callable[..., Any]) -> None:
    """A 250 written while the body is still arriving: the dot was never written."""
    run = await start(hostile_n=3, body="250 2.0.0 queued before the dot")
    await run.healthy_delivered(within=15.0)
    recs = await run.settled(run.hostile_ids, within=30.0)
    await run.finish()
    assert {r.state for r in recs} == {MessageState.DEFERRED}
    assert run.hostile.accepted() == []


async def test_421_mid_pipeline(start: Callable[..., Any]) -> None:
    run = await start(hostile_n=3, mail="421 4.3.2 shutting down")
    await run.healthy_delivered(within=15.0)
    recs = await run.settled(run.hostile_ids, within=30.0)
    await run.finish()
    assert {(r.state, r.last_reply_code) for r in recs} == {(MessageState.DEFERRED, 421)}
    assert run.hostile.received == []


async def test_drop_after_rcpt(start: Callable[..., Any]) -> None:
    run = await start(hostile_n=3, rcpt=["250 2.1.5 ok", "drop"])
    await run.healthy_delivered(within=15.0)
    recs = await run.settled(run.hostile_ids, within=30.0)
    await run.finish()
    assert {r.state for r in recs} == {MessageState.DEFERRED}
    assert run.hostile.received == []


# -- a wedged outcome writer is not fed more work ------------------------------------------


class _Wedged:
    """The real queue, with outcome writes held while `wedge` is set (a store that stops
    taking outcomes, as a lock held elsewhere or a stuck disk would)."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.wedge = asyncio.Event()
        self.unwedge = asyncio.Event()
        self.claimed_while_wedged = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def claim(self, lease: Any, limit: int, now: float) -> Any:
        got = await self._queue.claim(lease, limit, now)
        if self.wedge.is_set() and not self.unwedge.is_set():
            self.claimed_while_wedged += len(got)
        return got

    async def record_outcomes(self, lease: Any, outcomes: Any, *args: Any) -> Any:
        if self.wedge.is_set():
            await self.unwedge.wait()
        return await self._queue.record_outcomes(lease, outcomes, *args)


@pytest.mark.slow
async def test_claims_pause_while_the_oldest_outcome_waits_too_long(
    smtp_server: ServerFactory, open_runtime: RuntimeFactory, tmp_path: Path, key_dir: Path
) -> None:
    server = await smtp_server(host="127.0.0.10", dot="sleep 0.05 250 2.0.0 ok")  # ~40/s
    config = make_config(
        tmp_path,
        routes={HEALTHY: f"127.0.0.10:{server.port}"},
        key_dir=key_dir,
        dispatch={
            "claim_batch": 5,
            "max_sessions": 2,
            "sessions_per_host": 2,
            "max_outcome_age": "300ms",
        },
    )
    rt = await open_runtime(config)
    n = 200
    ids = [r.id for r in await rt.enqueue([payload(i, to=f"r{i}@{HEALTHY}") for i in range(n)])]
    wedged = _Wedged(rt.queue)
    engine = rt.engine()
    engine.queue = wedged  # type: ignore[assignment]
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    await server.wait_until(lambda: len(server.accepted()) >= 20, within=20)
    wedged.wedge.set()
    await asyncio.sleep(1.0)  # far longer than max_outcome_age
    paused_at = wedged.claimed_while_wedged
    await asyncio.sleep(1.0)
    # Claims stopped within max_outcome_age of the first unwritten outcome: nothing more
    # was claimed in the second second (without the pause they go on: a buffer without end).
    assert wedged.claimed_while_wedged == paused_at
    assert paused_at < n - 50, paused_at
    wedged.unwedge.set()
    await server.wait_until(lambda: len(server.accepted()) >= n, within=60)
    stop.set()
    await asyncio.wait_for(task, 60)
    recs = await rt.queue.get(ids)
    assert {r.state for r in recs} == {MessageState.DELIVERED}
    assert len(server.accepted()) == n  # each once


# -- finding 2: the memory a worker reaches against an endless reply ----------------------


async def _peak_rss_kib(tmp: Path, server: SmtpServer, n: int, client: str) -> tuple[int, int]:
    """(resident size when dispatching starts, peak while dispatching) of a worker, KiB."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.engine.rss_child", str(tmp), str(server.port),
        str(n), client, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    before, after = (int(x) for x in out.split()[-2:])
    return before, after


@pytest.mark.slow
@pytest.mark.parametrize("client", ["pipelining", "aiosmtplib"])
async def test_a_worker_stays_small_against_an_endless_reply(
    smtp_server: ServerFactory, tmp_path: Path, client: str
) -> None:
    """Before issue 10 the pipelining client grew from 24 MB to 326 MB in two seconds on a
    server streaming `250-x...`; now a reply is cut at 32 KB / 100 lines. Compared with
    the same worker against a healthy server (figures printed: peak RSS, KiB)."""
    endless = await smtp_server(Behaviour(), ehlo=Endless(), mail=Endless(), dot=Endless())
    healthy = await smtp_server()
    start, peak = await _peak_rss_kib(tmp_path / "endless", endless, 20, client)
    base_start, base = await _peak_rss_kib(tmp_path / "healthy", healthy, 20, client)
    print(
        f"peak RSS {client}: endless {peak} KiB (from {start}), "
        f"healthy {base} KiB (from {base_start})"
    )
    assert sum(c.closed for c in endless.sessions) >= 3  # it streamed, the client hung up
    # The endless server costs no more than a few MB over the healthy one (it was 300 MB).
    assert peak - start < (base - base_start) + 16 * 1024, (start, peak, base_start, base)
