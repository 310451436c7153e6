"""Suite-wide fixtures. MAILDISPATCH_LOOP=uvloop runs every async test on uvloop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from dispatcher.config import Config
from dispatcher.engine.runtime import Runtime
from dispatcher.message.verp import Verp
from tests.chaos.faults import FaultPlan
from tests.chaos.sink import RecordingSink, SinkFactory
from tests.support.engine import RuntimeFactory
from tests.support.smtp_server import Action, Behaviour, Message, ServerFactory, SmtpServer


def pytest_asyncio_loop_factories(
    config: Any, item: Any
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if os.environ.get("MAILDISPATCH_LOOP") == "uvloop":
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


# CI runs property tests derandomized (the same examples every run), so a run is repeatable;
# locally they explore new examples each time and keep failures in .hypothesis/.
if os.environ.get("CI"):
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None)
    settings.load_profile("ci")


@pytest.fixture
async def smtp_server() -> AsyncIterator[ServerFactory]:
    """Starts shared SMTP test servers (tests/support/smtp_server.py); all stopped at teardown.

    `s = await smtp_server(rcpt="550 5.1.1 no such user")`, or with a Behaviour first.
    """
    servers: list[SmtpServer] = []

    async def start(
        behaviour: Behaviour | None = None,
        *,
        host: str = "127.0.0.1",
        on_message: Callable[[Message], None] | None = None,
        **replies: Action,
    ) -> SmtpServer:
        server = await SmtpServer(behaviour, on_message=on_message, **replies).start(host)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def open_runtime() -> AsyncIterator[RuntimeFactory]:
    """Opens engine Runtimes (`rt = await open_runtime(config)`); all closed at teardown."""
    opened: list[Runtime] = []

    async def open_(config: Config) -> Runtime:
        rt = await Runtime.open(config)
        opened.append(rt)
        return rt

    yield open_
    for rt in reversed(opened):
        await rt.close()


@pytest.fixture
async def recording_sink() -> AsyncIterator[SinkFactory]:
    """Starts chaos recording sinks (tests/chaos/sink.py) in-process; stopped at teardown."""
    sinks: list[RecordingSink] = []

    async def start(
        record: Path,
        verp: Verp,
        plan: FaultPlan | None = None,
        *,
        strict: bool = False,
        keep_data: bool = False,
    ) -> RecordingSink:
        sink = await RecordingSink(record, verp, plan, strict=strict, keep_data=keep_data).start()
        sinks.append(sink)
        return sink

    yield start
    for sink in sinks:
        await sink.stop()
