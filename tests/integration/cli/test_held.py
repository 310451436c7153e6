"""`maildispatch held` end to end, on both backends: real sends whose dot got no reply are
held; the commands (separate processes) list, release and resolve them; `status` counts them;
`ambiguous = "release:DURATION"` releases them by itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.config import load_config
from dispatcher.engine.runtime import Runtime
from dispatcher.message.verp import Verp
from queues.protocol import HeldReason, MessageState
from tests.chaos.setup import payload, write_config
from tests.support.smtp_server import ServerFactory, SmtpServer, Turn

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


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def held_json(config: Path, *filters: str) -> dict[str, Any]:
    out = cli(config, "held", *filters, "--json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


async def drop_first_dots(smtp_server: ServerFactory) -> SmtpServer:
    """A server that hangs up after the first dot of each envelope sender: held mail."""
    seen: set[str] = set()

    def dot(turn: Turn) -> str | None:
        sender = turn.envelope.mail_from.split("@")[0]  # the VERP token; the domain rotates
        if sender in seen:
            return None
        seen.add(sender)
        return "drop"

    return await smtp_server(dot=dot)


async def held_setup(
    tmp_path: Path,
    key_dir: Path,
    backend: tuple[str, str],
    smtp_server: ServerFactory,
    ambiguous: str = "hold",
) -> tuple[Path, Runtime, SmtpServer, list[str], list[str]]:
    kind, dsn = backend
    Verp.from_file(tmp_path / "verp.key", "b")
    server = await drop_first_dots(smtp_server)
    path = write_config(
        tmp_path, sink_port=server.port, backend=kind, dsn=dsn, key_dir=key_dir,
        ambiguous=ambiguous,
    )  # fmt: skip
    rt = await Runtime.open(load_config(path))
    spring = [r.id for r in await rt.enqueue([payload(1, i, campaign="spring") for i in range(3)])]
    autumn = [r.id for r in await rt.enqueue([payload(2, i, campaign="autumn") for i in range(2)])]
    await asyncio.wait_for(rt.run(drain=True), 60)
    return path, rt, server, spring, autumn


async def test_held_list_release_resolve_and_status(
    tmp_path: Path, key_dir: Path, backend: tuple[str, str], smtp_server: ServerFactory
) -> None:
    path, rt, server, spring, autumn = await held_setup(tmp_path, key_dir, backend, smtp_server)
    try:
        listed = held_json(path)
        assert listed["held"] == 5
        msgs = {m["id"]: m for m in listed["messages"]}
        assert set(msgs) == {*spring, *autumn}
        for m in msgs.values():
            assert m["reason"] == HeldReason.NO_REPLY and m["reply_code"] is None
            # The pipelining client's words for a hang-up after the dot; both backends.
            assert m["reply_text"] == "connection closed by the server", m
            assert (m["attempts"], m["resends"], m["stream"]) == (1, 0, "transactional")
            assert m["held_at"] <= time.time()
        assert {m["id"] for m in held_json(path, "--campaign", "spring")["messages"]} == set(spring)
        assert held_json(path, "--older-than", "1h")["messages"] == []
        assert held_json(path, "--account", "chaos")["held"] == 5  # by name
        text = cli(path, "held")
        assert text.returncode == 0 and "5 listed, 5 held in all" in text.stdout
        assert "no_reply: connection closed by the server" in text.stdout

        status = json.loads(cli(path, "status", "--json").stdout)
        assert status["held"] == 5

        # No filter: refused, nothing changed.
        bare = cli(path, "held", "release")
        assert bare.returncode == 2 and "--all" in bare.stdout
        assert held_json(path)["held"] == 5

        out = cli(path, "held", "release", "--campaign", "spring")
        assert out.returncode == 0 and "released 3" in out.stdout, out.stderr
        assert {r.state for r in await rt.queue.get(spring)} == {S.QUEUED}
        out = cli(path, "held", "resolve", "--as", "failed", "--campaign", "autumn", "--json")
        assert json.loads(out.stdout) == {"resolved": 2, "as": "failed"}
        assert {r.state for r in await rt.queue.get(autumn)} == {S.FAILED}
        assert held_json(path)["held"] == 0

        await asyncio.wait_for(rt.run(drain=True), 60)
        assert {r.state for r in await rt.queue.get(spring)} == {S.DELIVERED}
        # Each released message reached the server twice: the resend an operator asked for.
        senders = [m.mail_from.split("@")[0] for m in server.received]
        assert len(senders) == 8 and len(set(senders)) == 5
        kinds: dict[str, set[str]] = {}
        after = 0
        while page := await rt.queue.read_events(after, 100):
            for e in page:
                if e.message_id:
                    kinds.setdefault(e.message_id, set()).add(e.kind)
            after = page[-1].seq
        assert all({"message.released", "message.delivered"} <= kinds[i] for i in spring)
        assert all("message.resolved" in kinds[i] for i in autumn)
    finally:
        await rt.close()


async def test_a_stream_releases_its_held_mail_after_the_delay(
    tmp_path: Path, key_dir: Path, backend: tuple[str, str], smtp_server: ServerFactory
) -> None:
    _, rt, server, spring, autumn = await held_setup(
        tmp_path, key_dir, backend, smtp_server, ambiguous="release:1s"
    )
    try:
        assert await rt.queue.held_count() == 5
        await asyncio.sleep(1.2)
        # The engine's recovery pass releases them; a drain run may end before sending.
        for _ in range(3):
            await asyncio.wait_for(rt.run(drain=True), 60)
            states = {r.state for r in await rt.queue.get([*spring, *autumn])}
            if states == {S.DELIVERED}:
                break
        assert states == {S.DELIVERED}
        released: list[str] = []
        after = 0
        while page := await rt.queue.read_events(after, 100):
            released += [e.message_id or "" for e in page if e.kind == "message.released"]
            after = page[-1].seq
        assert sorted(released) == sorted([*spring, *autumn])  # each a counted resend
        assert rt.metrics.held_released._value.get() == 5  # type: ignore[attr-defined]
        assert len(server.received) == 10
    finally:
        await rt.close()
