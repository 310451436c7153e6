"""SIGTERM: a real `maildispatch run` with a backlog, stopped mid-broadcast.

- No message starts after the signal: the engine counts MAIL commands written after its stop
  flag (look-aheads already on the wire excepted) and logs them: 0; the server sees no MAIL
  later than a moment after the signal.
- The deadline holds: the process is gone within `shutdown_timeout` (+0.5 s for the
  interpreter), although some sessions wait on a dot the server never answers.
- Everything is settled by the worker itself, nothing left for recovery: a dot unanswered at
  the deadline is `ambiguous` (held, with its reason), what never started is `queued` again
  with no attempt counted, the rest delivered.
- A second signal means now: far sooner than the timeout.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatcher.config import load_config
from dispatcher.engine.runtime import Runtime
from dispatcher.message.verp import Verp
from queues.protocol import MessageState
from tests.chaos.setup import payload, write_config
from tests.support.smtp_server import Message, ServerFactory, Turn

REPO = Path(__file__).resolve().parents[3]
S = MessageState
SHUTDOWN = 2.0
N = 400


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    dsn = ""
    if request.param == "postgres":
        from tests.support.postgres import create_test_database

        dsn = await create_test_database()
    yield request.param, dsn


async def _started(proc: asyncio.subprocess.Process, seen: list[bytes]) -> None:
    assert proc.stderr is not None
    while True:
        line = await proc.stderr.readline()
        if not line:
            return
        seen.append(line)


async def _sigterm_mid_broadcast(
    tmp_path: Path,
    key_dir: Path,
    backend: tuple[str, str],
    smtp_server: ServerFactory,
    *,
    signals: int,
) -> tuple[float, float, list[float], list[bytes], Runtime, list[str], Verp]:
    kind, dsn = backend
    verp = Verp.from_file(tmp_path / "verp.key", "b")
    mails: list[float] = []

    def mail(_: Turn) -> None:
        mails.append(time.monotonic())

    def dot(turn: Turn) -> str:
        # Every 7th message's dot is never answered; the others slowly: sessions stay busy.
        return "silent" if turn.messages % 7 == 0 else "sleep 0.15 250 2.0.0 queued"

    busy = asyncio.Event()

    def received(_: Message) -> None:
        if len(server.received) >= 40:
            busy.set()

    server = await smtp_server(mail=mail, dot=dot, on_message=received)
    path = write_config(
        tmp_path,
        sink_port=server.port,
        backend=kind,
        dsn=dsn,
        key_dir=key_dir,
        dispatch={
            "shutdown_timeout": f"{SHUTDOWN}s",
            "claim_batch": 200,
            "max_sessions": 12,
            "sessions_per_host": 4,
        },
        smtp={"data_timeout": "60s"},
    )
    rt = await Runtime.open(load_config(path))
    ids = [r.id for r in await rt.enqueue([payload(0, i) for i in range(N)])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_STOP")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher.cli", "run", "--config", str(path),
        cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    seen: list[bytes] = []
    reader = asyncio.create_task(_started(proc, seen))
    try:
        await asyncio.wait_for(busy.wait(), 60)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for _ in range(signals - 1):
            await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()
        elapsed = time.monotonic() - t0
        await reader
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, b"".join(seen[-30:])
    return t0, elapsed, mails, seen, rt, ids, verp


async def test_sigterm_starts_nothing_more_and_keeps_the_deadline(
    tmp_path: Path, key_dir: Path, backend: tuple[str, str], smtp_server: ServerFactory
) -> None:
    t0, elapsed, mails, seen, rt, ids, _ = await _sigterm_mid_broadcast(
        tmp_path, key_dir, backend, smtp_server, signals=1
    )
    try:
        log = b"".join(seen)
        (after,) = [int(n) for n in re.findall(rb"mails_after_stop=(\d+)", log)]
        assert after == 0, log[-2000:]
        # A look-ahead's MAIL written just before the signal may still be read just after.
        assert [t - t0 for t in mails if t > t0 + 0.25] == []
        assert elapsed <= SHUTDOWN + 0.5, elapsed
        # Silent dots were waiting at the deadline: the shutdown used its time, no more.
        assert elapsed >= SHUTDOWN * 0.5

        records = await rt.queue.get(ids)
        states = {r.id: r for r in records}
        assert len(states) == N
        by_state: dict[MessageState, int] = {}
        for r in records:
            by_state[r.state] = by_state.get(r.state, 0) + 1
        # Settled by the worker itself: nothing left for recovery.
        assert not {S.SENDING, S.COMMITTING} & set(by_state), by_state
        assert by_state.get(S.DELIVERED, 0) >= 30
        assert by_state.get(S.QUEUED, 0) > 0  # the backlog went back, unstarted
        held = [r for r in records if r.state == S.AMBIGUOUS]
        assert held and all(
            r.last_reply_text == "no reply to the final dot before the shutdown deadline"
            for r in held
        ), {r.last_reply_text for r in held}
        assert all(r.attempts == 0 for r in records if r.state == S.QUEUED)
    finally:
        await rt.close()


async def test_a_second_sigterm_means_now(
    tmp_path: Path, key_dir: Path, backend: tuple[str, str], smtp_server: ServerFactory
) -> None:
    _, elapsed, _, _, rt, ids, _ = await _sigterm_mid_broadcast(
        tmp_path, key_dir, backend, smtp_server, signals=2
    )
    try:
        # Silent dots would hold a single signal for most of the timeout.
        assert elapsed < SHUTDOWN * 0.75, elapsed
        records = await rt.queue.get(ids)
        assert len(records) == N
        states = {r.state for r in records}
        assert S.AMBIGUOUS in states and S.DELIVERED in states, states
        # What the worker could not settle in time is left for recovery, as after a crash.
        assert states <= {S.DELIVERED, S.AMBIGUOUS, S.QUEUED, S.SENDING, S.COMMITTING}
    finally:
        await rt.close()


async def test_a_message_whose_session_is_still_connecting_does_not_start(
    tmp_path: Path, key_dir: Path, smtp_server: ServerFactory
) -> None:
    mails: list[bytes] = []

    def mail(turn: Turn) -> None:
        mails.append(turn.command)

    connecting = asyncio.Event()

    def greeting(_: Turn) -> str:
        connecting.set()  # a session is connecting: its greeting is on its way, slowly
        return "sleep 0.6 220 slow.test ESMTP"

    server = await smtp_server(greeting=greeting, mail=mail)
    Verp.from_file(tmp_path / "verp.key", "b")
    path = write_config(tmp_path, sink_port=server.port, key_dir=key_dir)
    rt = await Runtime.open(load_config(path))
    try:
        ids = [r.id for r in await rt.enqueue([payload(0, i) for i in range(6)])]
        engine = rt.engine()
        stop = asyncio.Event()
        run = asyncio.create_task(engine.run(stop))
        await asyncio.wait_for(connecting.wait(), 10)
        stop.set()
        await asyncio.wait_for(run, 10)
        assert engine.mails_after_stop == 0
        assert mails == []
        records = await rt.queue.get(ids)
        assert {(r.state, r.attempts) for r in records} == {(S.QUEUED, 0)}
    finally:
        await rt.close()
