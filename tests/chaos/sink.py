"""The recording sink: a real SMTP server on loopback that durably records every message.

Each envelope is identified by its VERP envelope sender (the message id; the sink holds
the VERP secret) and recorded, one JSON line appended and flushed per event, with how it
ended: `accepted` (the sink sent 2xx), `unacked` (the whole message arrived, then the sink
dropped the connection or never answered) or `refused` (4xx/5xx after the dot). Faults
that end an envelope before the message arrived are recorded as `fault` events.

Faults follow a `FaultPlan` (chaos mode). In strict mode there are no faults, every
message's bytes are kept in the record, and data with a bare CR or bare LF is refused with
554 (RFC 5321 section 2.3.8).

Run as its own process, so that workers' deaths never touch it:
    python -m tests.chaos.sink --record FILE --port-file FILE --verp-secret FILE [--seed S]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dispatcher.message.verp import Verp
from tests.chaos.faults import Fault, FaultPlan

_BARE_CR = re.compile(rb"\r(?!\n)")
_SILENCE_CAP = 120.0  # a silent envelope waits for the client to hang up, at most this long


@dataclass(frozen=True, slots=True)
class SinkEvent:
    """One line of the record file."""

    ev: str  # receipt | fault
    id: str | None
    n: int
    fault: str | None
    ending: str | None = None  # receipts: accepted | unacked | refused
    reply: str = ""
    peer: str = ""
    mail_from: str = ""
    rcpts: tuple[str, ...] = ()
    data: bytes | None = None
    t: float = 0.0


def read_events(path: Path) -> list[SinkEvent]:
    """Every event of a record file, in order. A torn last line (sink killed) is skipped."""
    out: list[SinkEvent] = []
    with path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            d: dict[str, Any] = json.loads(line)
            data = d.get("data")
            out.append(
                SinkEvent(
                    ev=d["ev"],
                    id=d.get("id"),
                    n=int(d.get("n", 0)),
                    fault=d.get("fault"),
                    ending=d.get("ending"),
                    reply=d.get("reply", ""),
                    peer=d.get("peer", ""),
                    mail_from=d.get("from", ""),
                    rcpts=tuple(d.get("rcpts", ())),
                    data=base64.b64decode(data) if data is not None else None,
                    t=float(d.get("t", 0.0)),
                )
            )
    return out


@dataclass
class _Envelope:
    id: str | None = None
    n: int = 0
    fault: Fault | None = None
    mail_from: str = ""
    rcpts: list[str] = field(default_factory=list)


class _Closed(Exception):
    """The sink ended this connection on purpose (a fault or a 421)."""


class RecordingSink:
    """The server. Usable in-process (`await start()`), or as a process (see `main`)."""

    def __init__(
        self,
        record: Path,
        verp: Verp,
        plan: FaultPlan | None = None,
        *,
        strict: bool = False,
        keep_data: bool = False,
    ) -> None:
        self.record_path = record
        self.verp = verp
        self.plan = plan
        self.strict = strict
        self.keep_data = keep_data or strict
        self.port = 0
        self._envelopes_seen: dict[str, int] = {}
        self._fh: IO[bytes] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> RecordingSink:
        self._fh = self.record_path.open("ab")
        self._server = await asyncio.start_server(self._handle, host, port, limit=1 << 20)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def events(self) -> list[SinkEvent]:
        return read_events(self.record_path)

    # -- recording ---------------------------------------------------------------------

    def _write(self, env: _Envelope, ev: str, **extra: Any) -> None:
        assert self._fh is not None
        d: dict[str, Any] = {
            "ev": ev,
            "id": env.id,
            "n": env.n,
            "fault": env.fault.name if env.fault else None,
            "t": time.time(),
            **extra,
        }
        # Appended and flushed per event: a receipt is on disk (page cache) before any
        # reply goes out, so what the sink said is never missing from the record.
        self._fh.write(json.dumps(d, separators=(",", ":")).encode() + b"\n")
        self._fh.flush()

    # -- the dialogue ------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        peer = str(writer.get_extra_info("peername")[0])
        try:
            await self._dialogue(reader, writer, peer)
        except (_Closed, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _say(self, writer: asyncio.StreamWriter, line: str) -> None:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()
        if line.startswith("421"):
            raise _Closed  # RFC 5321: 421 closes the transmission channel

    async def _fault_at(
        self,
        phase: str,
        env: _Envelope,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        default: str,
    ) -> None:
        """Answer `default`, unless the envelope's fault strikes at this phase."""
        f = env.fault
        if f is None or f.phase != phase:
            await self._say(writer, default)
            return
        if f.action == "slow":
            assert self.plan is not None and env.id is not None
            await asyncio.sleep(self.plan.delay(env.id, env.n))
            await self._say(writer, default)
            return
        self._write(env, "fault", phase=phase)
        if f.action == "drop":
            raise _Closed
        await self._say(writer, f.action)

    async def _dialogue(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        await self._say(writer, "220 chaos-sink ESMTP")
        env = _Envelope()
        while True:
            line = await reader.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                writer.write(
                    b"250-chaos-sink\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n"
                )
                await writer.drain()
            elif verb == "MAIL":
                env = self._new_envelope(cmd)
                await self._fault_at("mail", env, reader, writer, "250 2.1.0 ok")
            elif verb == "RCPT":
                env.rcpts.append(_address(cmd))
                await self._fault_at("rcpt", env, reader, writer, "250 2.1.5 ok")
            elif verb == "DATA":
                await self._fault_at("data", env, reader, writer, "354 go ahead")
                await self._body(reader, writer, env, peer)
                env = _Envelope()
            elif verb == "RSET":
                env = _Envelope()
                await self._say(writer, "250 2.0.0 reset")
            elif verb == "NOOP":
                await self._say(writer, "250 2.0.0 ok")
            elif verb == "QUIT":
                await self._say(writer, "221 2.0.0 bye")
                return
            else:
                await self._say(writer, "502 5.5.2 not implemented")

    def _new_envelope(self, cmd: str) -> _Envelope:
        mail_from = _address(cmd)
        msg_id = self.verp.parse(mail_from)
        env = _Envelope(id=msg_id, mail_from=mail_from)
        if msg_id is not None:
            env.n = self._envelopes_seen.get(msg_id, 0)
            self._envelopes_seen[msg_id] = env.n + 1
            if self.plan is not None:
                env.fault = self.plan.fault_for(msg_id, env.n)
        return env

    async def _body(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        env: _Envelope,
        peer: str,
    ) -> None:
        chunks: list[bytes] = []
        while True:
            chunk = await reader.readline()
            if not chunk:
                return  # hung up mid-body: not a whole message
            if env.fault is not None and env.fault.phase == "body" and len(chunks) >= 1:
                self._write(env, "fault", phase="body")
                raise _Closed
            if chunk == b".\r\n":
                break
            chunks.append(chunk[1:] if chunk.startswith(b".") else chunk)
        data = b"".join(chunks)
        f = env.fault if env.fault is not None and env.fault.phase == "dot" else None
        reply = "250 2.0.0 queued"
        if self.strict and (_BARE_CR.search(data) or _has_bare_lf(data)):
            reply = "554 5.6.0 bare CR or bare LF in the message data"
        elif f is not None and f.action not in ("drop", "silent", "slow"):
            reply = f.action
        receipt: dict[str, Any] = {
            "peer": peer,
            "from": env.mail_from,
            "rcpts": env.rcpts,
            "size": len(data),
        }
        if self.keep_data:
            receipt["data"] = base64.b64encode(data).decode()
        if f is not None and f.action in ("drop", "silent"):
            self._write(env, "receipt", ending="unacked", reply="", **receipt)
            if f.action == "silent":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(), timeout=_SILENCE_CAP)
            raise _Closed
        if f is not None and f.action == "slow":
            assert self.plan is not None and env.id is not None
            await asyncio.sleep(self.plan.delay(env.id, env.n))
        ending = "accepted" if reply.startswith("2") else "refused"
        self._write(env, "receipt", ending=ending, reply=reply, **receipt)
        await self._say(writer, reply)


def _has_bare_lf(data: bytes) -> bool:
    return data.count(b"\n") != data.count(b"\r\n")


def _address(cmd: str) -> str:
    """The address of `MAIL FROM:<a> ...` or `RCPT TO:<a> ...`."""
    rest = cmd.split(":", 1)[1] if ":" in cmd else ""
    rest = rest.strip()
    if rest.startswith("<"):
        return rest[1 : rest.find(">")] if ">" in rest else rest[1:]
    return rest.split(" ", 1)[0]


# -- as a process ------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.sink", description=__doc__)
    p.add_argument("--record", required=True, type=Path)
    p.add_argument("--port-file", required=True, type=Path)
    p.add_argument("--verp-secret", required=True, type=Path)
    p.add_argument("--verp-prefix", default="b")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=int, help="inject faults planned from this seed")
    p.add_argument("--rate", type=float, default=0.3)
    p.add_argument("--max-faulty", type=int, default=3)
    p.add_argument("--strict", action="store_true")
    args = p.parse_args()
    verp = Verp.from_file(args.verp_secret, args.verp_prefix, create=False)
    plan = (
        None
        if args.seed is None
        else FaultPlan(args.seed, rate=args.rate, max_faulty=args.max_faulty)
    )

    async def serve() -> None:
        sink = await RecordingSink(args.record, verp, plan, strict=args.strict).start(args.host)
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(sink.port))
        os.replace(tmp, args.port_file)  # readers never see a half-written port
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await sink.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
