"""The local capture sink: a real SMTP server (aiosmtpd) that records what arrives.

For every message it records the peer address the connection came from, the envelope and
the message bytes, appended to a record file as `<json meta>\\n<bytes>\\n`. The demo reads the
file to check delivery at the sink rather than from the engine's own counters.

Product code (`maildispatch sink`, the demo), so it is not the shared test server of
tests/support/smtp_server.py (faults, byte-level scripts) nor the benchmark's bench/sink.py
(speed): a plain, correct server built on aiosmtpd that an operator can run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True, slots=True)
class SinkRecord:
    peer: str
    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes
    received_at: float


class CaptureHandler:
    """aiosmtpd handler: accept everything, record it, optionally print a line per message."""

    def __init__(self, record: IO[bytes] | None = None, echo: bool = False) -> None:
        self._record = record
        self._echo = echo
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        rcpts = list(envelope.rcpt_tos)
        now = time.time()
        self.count += 1
        if self._record is not None:
            meta = {
                "peer": peer,
                "mail_from": envelope.mail_from,
                "rcpts": rcpts,
                "len": len(data),
                "t": now,
            }
            self._record.write(json.dumps(meta).encode() + b"\n" + data + b"\n")
        if self._echo:
            print(
                f"{time.strftime('%H:%M:%S')} from {peer} <{envelope.mail_from}> -> "
                f"{', '.join(rcpts)} {len(data)} bytes",
                flush=True,
            )
        return "250 2.0.0 OK captured"


async def start_sink(
    host: str, port: int, handler: CaptureHandler
) -> tuple[asyncio.AbstractServer, int]:
    """Serve on host:port (0 for a free port); returns the server and the bound port."""
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return SMTP(handler, hostname="sink.local", decode_data=False, enable_SMTPUTF8=True)

    server = await loop.create_server(factory, host, port)
    bound = server.sockets[0].getsockname()[1]
    return server, int(bound)


def read_records(path: Path) -> Iterator[SinkRecord]:
    """Every message the sink recorded in `path`, in arrival order."""
    with path.open("rb") as f:
        while True:
            line = f.readline()
            if not line:
                return
            meta: dict[str, Any] = json.loads(line)
            data = f.read(int(meta["len"]))
            f.read(1)
            yield SinkRecord(
                peer=str(meta["peer"]),
                mail_from=str(meta["mail_from"]),
                rcpts=tuple(meta["rcpts"]),
                data=data,
                received_at=float(meta["t"]),
            )


async def serve_forever(listen: str, record: Path | None, echo: bool) -> None:
    """`maildispatch sink`: serve until cancelled; prints the bound address first."""
    host, _, port_s = listen.rpartition(":")
    fh = record.open("ab", buffering=1024 * 1024) if record else None
    handler = CaptureHandler(fh, echo=echo)
    server, port = await start_sink(host or "127.0.0.1", int(port_s or 0), handler)
    print(f"sink listening on {host or '127.0.0.1'}:{port}", flush=True)
    try:
        async with server:
            await server.serve_forever()
    finally:
        if fh is not None:
            fh.close()
