"""The command line as separate processes on one SQLite file: enqueue, run, status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.engine import DEST, make_config, payload
from tests.support.smtp_server import ServerFactory

REPO = Path(__file__).resolve().parents[3]


def write_config(tmp: Path, key_dir: Path, port: int, extra: str = "") -> Path:
    """A config.toml equivalent to tests.support.engine.make_config, as a file."""
    make_config(tmp, key_dir=key_dir)  # validates the same shape
    text = f"""
state_dir = "{tmp / "state"}"
[queue]
path = "{tmp / "state" / "queue.db"}"
[dispatch]
poll_interval = "50ms"
shutdown_timeout = "5s"
[dkim]
create_missing = true
[[dkim.keys]]
domain = "acme-news.example"
selector = "s1"
file = "{key_dir / "acme-news.example.s1.pem"}"
[[dkim.keys]]
domain = "send1.platform.example"
selector = "s1"
file = "{key_dir / "send1.platform.example.s1.pem"}"
[[accounts]]
name = "acme"
author_domains = ["acme-news.example"]
[[pools]]
name = "main"
[[pools.ips]]
address = "127.0.0.2"
ehlo = "mta1.platform.example"
[[pools.domains]]
domain = "send1.platform.example"
[routes]
"{DEST}" = "127.0.0.1:{port}"
{extra}
"""
    path = tmp / "config.toml"
    path.write_text(text)
    tomllib.loads(text)
    return path


def cli(
    *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-keys")


async def test_enqueue_reports_bad_lines_and_stores_the_good(
    tmp_path: Path, key_dir: Path, smtp_server: ServerFactory
) -> None:
    sink = await smtp_server()
    cfg = write_config(tmp_path, key_dir, sink.port)
    lines = [
        json.dumps(payload(1)),
        "{not json",
        json.dumps(payload(2, to="a@x.example, b@x.example")),
        json.dumps(payload(3)),
        json.dumps(payload(1)),  # same key and payload: the original id again
        json.dumps(payload(3, subject="changed")),  # same key, other payload: conflict
    ]
    out = cli("enqueue", "--config", str(cfg), "-", stdin="\n".join(lines) + "\n")
    assert out.returncode == 1, out.stderr
    ids = out.stdout.split("\n")
    printed = [line for line in ids if line]
    assert len(printed) == 3
    assert printed[2] == printed[0] + " duplicate"
    assert "line 2: payload:" in out.stderr  # parse_payload names the document
    assert "line 3: to:" in out.stderr
    assert "line 6: idempotency_key:" in out.stderr

    status = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert status["by_state"].get("queued") == 2


async def test_run_drain_then_status(
    tmp_path: Path, key_dir: Path, smtp_server: ServerFactory
) -> None:
    sink = await smtp_server()
    cfg = write_config(tmp_path, key_dir, sink.port)
    body = "".join(json.dumps(payload(i)) + "\n" for i in range(20))
    assert cli("enqueue", "--config", str(cfg), "-", stdin=body).returncode == 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher.cli",
        "run",
        "--config",
        str(cfg),
        "--drain",
        cwd=REPO,
    )
    assert await asyncio.wait_for(proc.wait(), timeout=60) == 0
    status = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert status["by_state"] == {"delivered": 20}
    assert status["by_source_ip"]["127.0.0.2"]["delivered"] == 20
    assert len(sink.accepted()) == 20


async def test_sigterm_stops_run_gracefully(
    tmp_path: Path, key_dir: Path, smtp_server: ServerFactory
) -> None:
    sink = await smtp_server(dot="sleep 0.1 250 2.0.0 ok")
    cfg = write_config(tmp_path, key_dir, sink.port)
    body = "".join(json.dumps(payload(i)) + "\n" for i in range(200))
    assert cli("enqueue", "--config", str(cfg), "-", stdin=body).returncode == 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher.cli",
        "run",
        "--config",
        str(cfg),
        cwd=REPO,
    )
    await sink.wait_until(lambda: len(sink.accepted()) >= 5, within=30)
    os.kill(proc.pid, signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    status = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    states = status["by_state"]
    # Nothing is left half-way: every message is delivered or back in the queue.
    assert set(states) <= {"delivered", "queued"}
    assert states.get("delivered", 0) == len(sink.accepted())
    assert states.get("delivered", 0) + states.get("queued", 0) == 200
    assert states.get("queued", 0) > 0
