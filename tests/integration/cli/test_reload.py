"""Live reload in a real `maildispatch run` (SQLite, the shared SMTP server): an invalid edit
is rejected with its errors logged and delivery goes on; a valid edit draining one source IP
moves its mail to the others, nothing lost or sent twice (at the server and in the store)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatcher.config import load_config
from dispatcher.engine.runtime import Runtime
from queues.protocol import MessageState
from tests.chaos.setup import SOURCE_IPS, payload, write_config
from tests.support.smtp_server import Message, ServerFactory

REPO = Path(__file__).resolve().parents[3]
N = 300
DRAINED = SOURCE_IPS[0][0]


async def _until(cond: Callable[[], bool], within: float) -> None:
    """Poll `cond` (state in another process and a server's records: no event to wait on)."""
    async with asyncio.timeout(within):
        while True:
            if cond():
                return
            await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_reload_rejects_an_invalid_edit_and_drains_an_ip_mid_run(
    tmp_path: Path, smtp_server: ServerFactory
) -> None:
    arrivals: list[tuple[float, Message]] = []

    def received(m: Message) -> None:
        arrivals.append((time.monotonic(), m))

    server = await smtp_server(dot="sleep 0.03 250 2.0.0 queued", on_message=received)
    path = write_config(
        tmp_path,
        sink_port=server.port,
        # Short sessions: admission opens many, each from an IP chosen by weight, so every
        # IP carries mail before the drain.
        dispatch={
            "max_sessions": 6,
            "sessions_per_host": 6,
            "claim_batch": 50,
            "messages_per_session": 10,
        },
    )
    good = path.read_text(encoding="utf-8")
    rt = await Runtime.open(load_config(path))
    ids = [r.id for r in await rt.enqueue([payload(0, i) for i in range(N)])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_STOP")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher.cli", "run", "--config", str(path),
        cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    log: list[tuple[float, bytes]] = []

    async def read() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            log.append((time.monotonic(), line))

    def logged(text: bytes) -> float | None:
        return next((t for t, line in log if text in line), None)

    reader = asyncio.create_task(read())
    try:
        await _until(lambda: len(arrivals) >= 20, 60)
        # An invalid edit: rejected with its key path, the running config stays.
        path.write_text(good.replace("weight = 3", 'weight = "heavy"', 1), encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        await _until(lambda: logged(b"config reload rejected") is not None, 20)
        rejected = [line for _, line in log if b"config reload rejected" in line]
        assert b"pools[0].ips[0].weight" in rejected[0], rejected
        before = len(arrivals)
        await _until(lambda: len(arrivals) >= before + 20, 30)  # delivery goes on
        assert logged(b"config reloaded") is None

        # A valid edit, seen by the file watcher alone: the first IP drains.
        drained = good.replace(
            f'address = "{DRAINED}"\n', f'address = "{DRAINED}"\nstate = "draining"\n', 1
        )
        assert drained != good
        path.write_text(drained, encoding="utf-8")
        await _until(lambda: logged(b"config reloaded") is not None, 20)
        t_reload = logged(b"config reloaded")
        assert t_reload is not None
        assert len(arrivals) < N, "the backlog was gone before the drain: nothing to show"
        await _until(lambda: len(arrivals) >= N, 120)
        await asyncio.sleep(0.5)  # anything sent twice would arrive now
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()
        await reader
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, b"".join(line for _, line in log[-30:])
    try:
        # At the server: every message once, the drained IP silent after the reload (its
        # in-flight sessions finish their message: a moment's grace).
        rcpts = Counter(r for _, m in arrivals for r in m.rcpts)
        assert len(rcpts) == N and set(rcpts.values()) == {1}, rcpts.most_common(3)
        peers = Counter(m.peer.rsplit(":", 1)[0] for _, m in arrivals)
        assert peers[DRAINED] > 0 and len(peers) == len(SOURCE_IPS), peers
        late = [m.peer for t, m in arrivals if t > t_reload + 1.0]
        assert late and DRAINED not in {p.rsplit(":", 1)[0] for p in late}, Counter(late)
        # In the store: all delivered.
        records = await rt.queue.get(ids)
        assert Counter(r.state for r in records) == {MessageState.DELIVERED: N}
    finally:
        await rt.close()
