"""The recording sink: a real SMTP server on loopback that durably records every message.

Each envelope is identified by its VERP envelope sender (the message id; the sink holds
the VERP secret) and recorded, one JSON line appended and flushed per event, with how it
ended: `accepted` (the sink sent 2xx), `unacked` (the whole message arrived, then the sink
dropped the connection or never answered) or `refused` (4xx/5xx after the dot). Faults
that end an envelope before the message arrived are recorded as `fault` events.

Faults follow a `FaultPlan` (chaos mode). In strict mode there are no faults, every
message's bytes are kept in the record, and data with a bare CR or bare LF is refused with
554 (RFC 5321 section 2.3.8).

Built on the shared test server (tests/support/smtp_server.py): the plan's faults are its
per-phase actions, and the record is written from its `on_message` hook, before the reply.

Run as its own process, so that workers' deaths never touch it:
    python -m tests.chaos.sink --record FILE --port-file FILE --verp-secret FILE [--seed S]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from dispatcher.message.verp import Verp
from tests.chaos.faults import Fault, FaultPlan
from tests.support.smtp_server import (
    Action,
    Behaviour,
    Default,
    Delay,
    Message,
    Quiet,
    SmtpServer,
    Turn,
)

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


class RecordingSink:
    """The server (the shared test server with a fault plan and a record file). Usable
    in-process (`await start()`), or as a process (see `main`)."""

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
        behaviour = Behaviour(
            hostname="chaos-sink",
            replies={
                "mail": self._at_mail,
                "rcpt": self._at_phase,
                "data": self._at_phase,
                "body": self._at_phase,
                "dot": self._at_dot,
            },
            silence_cap=_SILENCE_CAP,
        )
        self._server = SmtpServer(behaviour, on_message=self._receipt)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> RecordingSink:
        self._fh = self.record_path.open("ab")
        await self._server.start(host, port)
        self.port = self._server.port
        return self

    async def stop(self) -> None:
        await self._server.stop()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def events(self) -> list[SinkEvent]:
        return read_events(self.record_path)

    async def wait_until(
        self, predicate: Callable[[list[SinkEvent]], bool], within: float = 10.0
    ) -> list[SinkEvent]:
        """The events, once `predicate(events)` holds (checked whenever the server moves)."""
        await self._server.wait_until(lambda: predicate(self.events()), within)
        return self.events()

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

    def _receipt(self, msg: Message) -> None:
        """Called by the server once the message is whole, before its reply is written."""
        env: _Envelope = msg.notes.get("chaos") or _Envelope()
        receipt: dict[str, Any] = {
            "peer": msg.peer,
            "from": msg.mail_from,
            "rcpts": msg.rcpts,
            "size": len(msg.data),
        }
        if self.keep_data:
            receipt["data"] = base64.b64encode(msg.data).decode()
        self._write(env, "receipt", ending=msg.ending, reply=msg.reply, **receipt)

    # -- the faults --------------------------------------------------------------------

    def _at_mail(self, turn: Turn) -> Action | None:
        msg_id = self.verp.parse(turn.envelope.mail_from)
        env = turn.envelope.notes["chaos"] = _Envelope(id=msg_id)
        if msg_id is not None:
            env.n = self._envelopes_seen.get(msg_id, 0)
            self._envelopes_seen[msg_id] = env.n + 1
            if self.plan is not None:
                env.fault = self.plan.fault_for(msg_id, env.n)
        return self._at_phase(turn)

    def _at_phase(self, turn: Turn) -> Action | None:
        """The normal reply, unless the envelope's fault strikes at this phase."""
        env: _Envelope | None = turn.envelope.notes.get("chaos")
        f = env.fault if env is not None else None
        if env is None or f is None or f.phase != turn.phase:
            return Quiet() if turn.phase == "body" else None
        if f.action == "slow":
            assert self.plan is not None and env.id is not None
            return [Delay(self.plan.delay(env.id, env.n)), Default()]
        self._write(env, "fault", phase=turn.phase)
        return f.action  # a reply (421 closes), or "drop"

    def _at_dot(self, turn: Turn) -> Action | None:
        env: _Envelope = turn.envelope.notes.get("chaos") or _Envelope()
        f = env.fault if env.fault is not None and env.fault.phase == "dot" else None
        assert turn.message is not None
        data = turn.message.data
        reply = "250 2.0.0 queued"
        if self.strict and (_BARE_CR.search(data) or _has_bare_lf(data)):
            reply = "554 5.6.0 bare CR or bare LF in the message data"
        elif f is not None and f.action not in ("drop", "silent", "slow"):
            reply = f.action
        if f is not None and f.action in ("drop", "silent"):
            return f.action  # recorded unacked; silent waits for the client to hang up
        if f is not None and f.action == "slow":
            assert self.plan is not None and env.id is not None
            return [Delay(self.plan.delay(env.id, env.n)), reply]
        return reply


class SinkFactory(Protocol):
    """The `recording_sink` fixture: starts a RecordingSink on 127.0.0.1:0, stopped at teardown."""

    async def __call__(
        self,
        record: Path,
        verp: Verp,
        plan: FaultPlan | None = None,
        *,
        strict: bool = False,
        keep_data: bool = False,
    ) -> RecordingSink: ...


def _has_bare_lf(data: bytes) -> bool:
    return data.count(b"\n") != data.count(b"\r\n")


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
