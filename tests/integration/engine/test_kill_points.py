"""Kill points: a real `maildispatch run` stopped at a named point and SIGKILLed there.

Another worker then recovers (a recovery pass, then an in-process engine on the same queue):
- after_claim: the message was `sending`: requeued with no attempt counted, delivered once;
- after_body: the body is written up to its final dot, the mark not yet asked for: still
  `sending`, so requeued and delivered once (the receiver dropped the unfinished DATA);
- after_mark: `committing`, the dot never written: ambiguous and held (the promise is
  conservative: once the mark is durable the dot may have gone out, so it is never resent);
- after_dot: the dot written, its reply not read: the sink accepted it; ambiguous and held;
- after_2xx and before_outcome_write: the sink accepted it once, the outcome write died with
  the worker: ambiguous and held, never resent.
SQLite: the killed worker's flock dies with it, so recovery is immediate. PostgreSQL: the
lease must expire; rather than wait `lease_ttl` the recovery pass is run at a clock past
the expiry (recover() takes `now` for exactly this).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatcher.config import load_config
from dispatcher.engine.runtime import Runtime
from dispatcher.message.verp import Verp
from queues.protocol import MessageRecord, MessageState
from tests.chaos.setup import payload, write_config
from tests.chaos.sink import SinkFactory
from tests.support.engine import RuntimeFactory

REPO = Path(__file__).resolve().parents[3]
S = MessageState


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


async def _stop_worker_at(config: Path, point: str) -> None:
    """Start `maildispatch run`, wait until it stops itself at `point`, SIGKILL it."""
    env = {k: v for k, v in os.environ.items() if k != "MAILDISPATCH_STOP_SKIP"}
    env["MAILDISPATCH_STOP_AT"] = point
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher.cli", "run", "--config", str(config),
        cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while True:
                line = await proc.stderr.readline()
                assert line, f"worker exited before {point}: {b''.join(seen[-20:])!r}"
                seen.append(line)
                if line.strip() == f"maildispatch: stopped at {point}".encode():
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL


async def _one(rt: Runtime, msg_id: str) -> MessageRecord:
    (rec,) = await rt.queue.get([msg_id])
    return rec


@pytest.mark.parametrize(
    ("point", "in_flight", "after_recovery", "final", "at_sink"),
    [
        ("after_claim", S.SENDING, S.QUEUED, S.DELIVERED, 1),
        ("after_body", S.SENDING, S.QUEUED, S.DELIVERED, 1),
        ("after_mark", S.COMMITTING, S.AMBIGUOUS, S.AMBIGUOUS, 0),
        ("after_dot", S.COMMITTING, S.AMBIGUOUS, S.AMBIGUOUS, 1),
        ("after_2xx", S.COMMITTING, S.AMBIGUOUS, S.AMBIGUOUS, 1),
        ("before_outcome_write", S.COMMITTING, S.AMBIGUOUS, S.AMBIGUOUS, 1),
    ],
)
async def test_kill_point(
    tmp_path: Path,
    key_dir: Path,
    backend: tuple[str, str],
    recording_sink: SinkFactory,
    open_runtime: RuntimeFactory,
    point: str,
    in_flight: MessageState,
    after_recovery: MessageState,
    final: MessageState,
    at_sink: int,
) -> None:
    kind, dsn = backend
    verp = Verp.from_file(tmp_path / "verp.key", "b")
    sink = await recording_sink(tmp_path / "sink.jsonl", verp)
    path = write_config(tmp_path, sink_port=sink.port, backend=kind, dsn=dsn, key_dir=key_dir)
    rt = await open_runtime(load_config(path))
    (result,) = await rt.enqueue([payload(0, 0)])
    msg_id = result.id

    await _stop_worker_at(path, point)

    rec = await _one(rt, msg_id)
    assert (rec.state, rec.attempts) == (in_flight, 0)
    now = time.time()
    if kind == "postgres":
        now += rt.queue.lease_ttl + 1  # type: ignore[attr-defined]
    report = await rt.queue.recover(now, {"transactional": "hold"})
    assert report.workers >= 1
    assert (report.requeued, report.ambiguous) == ((1, 0) if after_recovery == S.QUEUED else (0, 1))
    rec = await _one(rt, msg_id)
    # A requeued message never had an attempt; an ambiguous one had exactly one.
    assert (rec.state, rec.attempts) == (after_recovery, 0 if after_recovery == S.QUEUED else 1)

    await asyncio.wait_for(rt.run(drain=True), timeout=60)

    rec = await _one(rt, msg_id)
    assert (rec.state, rec.attempts) == (final, 1)
    receipts = [e for e in sink.events() if e.ev == "receipt"]
    assert [(e.id, e.ending) for e in receipts] == [(msg_id, "accepted")] * at_sink
