"""`maildispatch events tail`: the outcome events of a run, as text and as JSON lines, and
following: an event appended while it runs is printed."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from dispatcher.config import load_config
from dispatcher.engine.runtime import make_queue
from queues.protocol import Event
from tests.integration.cli.test_cli import REPO, cli, write_config
from tests.support.engine import payload
from tests.support.smtp_server import ServerFactory


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("events-cli-keys")


async def test_tail_prints_the_outcome_events_then_follows(
    smtp_server: ServerFactory, tmp_path: Path, key_dir: Path
) -> None:
    sink = await smtp_server()
    cfg = write_config(tmp_path, key_dir, sink.port)
    body = "".join(json.dumps(payload(i)) + "\n" for i in range(5))
    assert cli("enqueue", "--config", str(cfg), "-", stdin=body).returncode == 0
    # The sink runs on this loop: the worker must not be waited for by a blocking call.
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher.cli", "run", "--config", str(cfg), "--drain",
        cwd=REPO,
    )  # fmt: skip
    assert await asyncio.wait_for(run.wait(), timeout=60) == 0

    out = cli("events", "tail", "--config", str(cfg), "--json", "--no-follow")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["kind"] for r in rows] == ["message.delivered"] * 5
    assert all(r["data"]["source_ip"] == "127.0.0.2" for r in rows)
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)

    two = cli("events", "tail", "--config", str(cfg), "-n", "2", "--no-follow")
    lines = two.stdout.splitlines()
    assert len(lines) == 2 and all("message.delivered" in x for x in lines)
    assert lines[-1].split()[0] == str(rows[-1]["seq"])

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher.cli", "events", "tail", "--config", str(cfg),
        "--json", "-n", "0", cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        # `-n 0` follows from where the tail started, which a loaded machine may reach late:
        # keep appending until one arrives, rather than guessing how long it takes to start.
        queue = make_queue(load_config(cfg))
        await queue.open()
        try:
            reading = asyncio.ensure_future(proc.stdout.readline())
            for _ in range(60):
                await queue.append_events([Event("ip.paused", time.time(), {"ip": "127.0.0.2"})])
                done, _pending = await asyncio.wait({reading}, timeout=0.5)
                if done:
                    break
            line = await asyncio.wait_for(reading, timeout=20)
        finally:
            await queue.close()
        followed = json.loads(line)
        assert (followed["kind"], followed["data"]) == ("ip.paused", {"ip": "127.0.0.2"})
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
