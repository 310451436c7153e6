"""The shared SMTP test server: a real asyncio server on loopback whose behaviour each test picks.

    server = await SmtpServer(Behaviour(pipelining=False), rcpt="550 5.1.1 no such user").start()
    ...                                  # or the `smtp_server` fixture (tests/conftest.py)
    (msg,) = server.accepted()           # peer, envelope, data (unstuffed), raw (the wire bytes)
    await server.stop()

A `Behaviour` sets what the server offers (PIPELINING, SMTPUTF8, 8BITMIME, STARTTLS with a TLS
context, more EHLO keywords) and, per phase, what it does instead of the normal reply. The
phases: greeting, ehlo (EHLO and HELO), starttls, mail, rcpt, data (the DATA command), body
(once, after the first line of the message data; anything written there is an early reply and
the connection closes after it), dot (after the final dot), rset, noop, quit, other (any
other command). An action is one of:

- a str: a reply ("421 4.3.2 busy"; lines joined by CRLF make a multi-line reply; CRLF added),
  or "drop", "silent", "quiet", or "sleep SECONDS <action>" (the same, later);
- bytes: written exactly (invalid UTF-8, control bytes, no CRLF added, several replies at once);
- a step: `Reply`, `Raw`, `Default` (the normal reply), `Drop` (close; `abort=True` resets),
  `Silent` (never answer: wait for the client to hang up), `Quiet` (no reply, carry on: pair it
  with replies sent ahead), `Delay`, `Tarpit` (one byte per interval), `Endless` (a reply that
  never ends: `250-x` lines forever), `StartTls`;
- a list of actions, run in order (["250 2.0.0 ok", "drop"]: answer the dot, then hang up);
- a callable taking the `Turn` (phase, command, connection, envelope, message counts) and
  returning an action, or None for the normal reply.

A reply that starts with 421 closes the connection after it is written (RFC 5321 3.8), so a 421
mid-pipeline leaves the rest of the group unanswered. Every whole message is recorded with how
it ended: `accepted` (the first reply to its dot is 2xx), `refused` (4xx/5xx) or `unacked` (no
reply: a drop, silence, or bytes that are no reply); the record exists, and `on_message` has
run, before any byte of that reply is written. `flights` counts the server's reply batches (one
per read from the client that got an answer; the greeting is none), the round trips a client
needs. Buffers are bounded (`max_line`, `max_message`), waits too (`silence_cap`).

Not the same as bench/sink.py (an asyncio.Protocol tuned to be fast enough to measure the
engine, no faults) nor dispatcher/cli/sink.py (the product's capture sink on aiosmtpd, used by
`maildispatch sink` and the demo): this one trades speed for control over every byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

PHASES = (
    "greeting", "ehlo", "starttls", "mail", "rcpt", "data", "body", "dot",
    "rset", "noop", "quit", "other",
)  # fmt: skip


# -- steps -------------------------------------------------------------------------------------


class Step:
    """One thing the server does in place of (or around) a reply."""


@dataclass(frozen=True)
class Reply(Step):
    """Reply lines as text; CRLF is added at the end (embed CRLF for a multi-line reply)."""

    text: str


@dataclass(frozen=True)
class Raw(Step):
    """Bytes written exactly as given."""

    data: bytes


@dataclass(frozen=True)
class Default(Step):
    """The phase's normal reply."""


@dataclass(frozen=True)
class Drop(Step):
    """Close the connection now (`abort`: a reset, without flushing what is buffered)."""

    abort: bool = False


@dataclass(frozen=True)
class Silent(Step):
    """Never answer: read and discard until the client hangs up (at most `silence_cap`)."""


@dataclass(frozen=True)
class Quiet(Step):
    """No reply to this command, and carry on (its reply went ahead, or never comes)."""


@dataclass(frozen=True)
class Delay(Step):
    """Wait before the next step."""

    seconds: float


@dataclass(frozen=True)
class Tarpit(Step):
    """Write the reply one byte at a time, `interval` seconds apart."""

    reply: str | bytes
    interval: float = 1.0


@dataclass(frozen=True)
class Endless(Step):
    """Write `chunk` again and again until the client goes away (a reply that never ends)."""

    chunk: bytes = b"250-" + b"x" * 70 + b"\r\n"
    interval: float = 0.0


@dataclass(frozen=True)
class StartTls(Step):
    """Start the TLS handshake (the normal answer to STARTTLS does it after its 220)."""


# -- records -----------------------------------------------------------------------------------


@dataclass
class Envelope:
    """The transaction in progress on a connection; `notes` is for the test's callables."""

    mail_from: str = ""
    rcpts: list[str] = field(default_factory=list)
    mail_accepted: bool = False
    accepted_rcpts: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    """One whole message as the server received it."""

    peer: str
    mail_from: str
    rcpts: list[str]
    data: bytes  # unstuffed: what the client meant to send
    raw: bytes  # the DATA payload exactly as on the wire, final ".\r\n" included
    connection: int  # index into SmtpServer.sessions
    ending: str = "unacked"  # accepted | refused | unacked
    reply: str = ""  # the start of the reply to the dot, as text ("" when none)
    notes: dict[str, Any] = field(default_factory=dict)  # the envelope's notes


@dataclass
class Connection:
    """One client connection: who, what it said, what came of it."""

    index: int
    peer: str
    ehlo_names: list[str] = field(default_factory=list)
    commands: list[bytes] = field(default_factory=list)  # raw command lines, CRLF included
    messages: list[Message] = field(default_factory=list)
    tls: bool = False
    discarded_at_starttls: bytes = b""  # bytes pipelined behind STARTTLS (thrown away)
    flights: int = 0
    closed: bool = False
    envelope: Envelope = field(default_factory=Envelope)
    in_data: bytearray = field(default_factory=bytearray)  # the message arriving, as sent


@dataclass(frozen=True)
class Turn:
    """What a callable action sees: the phase, the command, the connection and the server."""

    phase: str
    command: bytes  # the command line (b"" for the greeting and the body, b".\r\n" at the dot)
    connection: Connection
    server: SmtpServer

    @property
    def envelope(self) -> Envelope:
        return self.connection.envelope

    @property
    def messages(self) -> int:
        """Whole messages this server received so far (at the dot: this one included)."""
        return len(self.server.received)

    @property
    def message(self) -> Message | None:
        """At the dot: the message just received (its ending not yet decided)."""
        return self.connection.messages[-1] if self.phase == "dot" else None


Action: TypeAlias = "str | bytes | Step | Sequence[Action] | Callable[[Turn], Action | None]"


@dataclass(frozen=True)
class Behaviour:
    """What the server offers, and what it does per phase instead of its normal replies."""

    replies: Mapping[str, Action] = field(default_factory=dict)
    hostname: str = "smtp.test"
    pipelining: bool = True
    smtputf8: bool = True
    eightbitmime: bool = True
    starttls: ssl.SSLContext | None = None  # offer STARTTLS with this context
    extensions: tuple[str, ...] = ()  # more EHLO keywords, e.g. "SIZE 1000000"
    # A real server refuses DATA when no MAIL or RCPT of the transaction was accepted; by
    # default this one says 354 regardless (a broken server).
    data_needs_rcpt: bool = False
    max_line: int = 1 << 20
    max_message: int = 64 << 20
    silence_cap: float = 120.0

    def __post_init__(self) -> None:
        unknown = set(self.replies) - set(PHASES)
        if unknown:
            raise ValueError(f"unknown phases {sorted(unknown)}; known: {PHASES}")


class ServerFactory(Protocol):
    """The `smtp_server` fixture: starts a server on 127.0.0.1:0, stopped at teardown."""

    async def __call__(
        self,
        behaviour: Behaviour | None = None,
        *,
        host: str = "127.0.0.1",
        on_message: Callable[[Message], None] | None = None,
        **replies: Action,
    ) -> SmtpServer: ...


class _Closed(Exception):
    """The server ends this connection (a drop, a 421, a limit)."""


_WRITES = (Reply, Raw, Tarpit, Endless)


def _parse(action: str) -> list[Step]:
    if action == "drop":
        return [Drop()]
    if action == "silent":
        return [Silent()]
    if action == "quiet":
        return [Quiet()]
    if action.startswith("sleep "):
        _, secs, rest = action.split(" ", 2)
        return [Delay(float(secs)), *_parse(rest)]
    return [Reply(action)]


def _head(step: Step) -> bytes:
    if isinstance(step, Reply):
        return step.text.encode("utf-8", "surrogateescape")
    if isinstance(step, Raw):
        return step.data
    if isinstance(step, Tarpit):
        return step.reply.encode() if isinstance(step.reply, str) else step.reply
    if isinstance(step, Endless):
        return step.chunk
    return b""


def _code(data: bytes) -> int | None:
    return int(data[:3]) if len(data) >= 3 and data[:3].isdigit() else None


def _address(cmd: str) -> str:
    """The address of `MAIL FROM:<a> ...` or `RCPT TO:<a> ...`."""
    rest = cmd.split(":", 1)[1].strip() if ":" in cmd else ""
    if rest.startswith("<"):
        return rest[1 : rest.find(">")] if ">" in rest else rest[1:]
    return rest.split(" ", 1)[0]


class _Io:
    """A connection's streams and its input buffer."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Connection
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.buf = bytearray()
        self.answered = True  # the greeting is no flight: only answers to input count


class SmtpServer:
    """The server. `start()` listens on host:0; everything it saw is on the instance."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        on_message: Callable[[Message], None] | None = None,
        **replies: Action,
    ) -> None:
        behaviour = behaviour or Behaviour()
        if replies:
            behaviour = dataclasses.replace(behaviour, replies={**behaviour.replies, **replies})
        self.behaviour = behaviour
        self.on_message = on_message
        self.host = ""
        self.port = 0
        self.sessions: list[Connection] = []
        self.received: list[Message] = []
        self.errors: list[Exception] = []  # raised by callables and hooks (stop() re-raises)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._arriving: Connection | None = None

    # -- life ---------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SmtpServer:
        self._server = await asyncio.start_server(self._handle, host, port, limit=1 << 16)
        self.host = host
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening and end every connection (silent or endless ones too); then
        re-raise the first exception a test's callable or hook raised, if any."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self.errors:
            raise self.errors[0]

    async def __aenter__(self) -> SmtpServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what it saw --------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        return len(self.sessions)

    @property
    def peers(self) -> list[str]:
        return [c.peer for c in self.sessions]

    @property
    def ehlo_names(self) -> list[str]:
        return [name for c in self.sessions for name in c.ehlo_names]

    @property
    def flights(self) -> int:
        return sum(c.flights for c in self.sessions)

    @property
    def in_data(self) -> bytes:
        """The data (dot-stuffed, as sent) of the message arriving last, before its dot."""
        return bytes(self._arriving.in_data) if self._arriving is not None else b""

    @property
    def tls_sessions(self) -> int:
        return sum(c.tls for c in self.sessions)

    def accepted(self) -> list[Message]:
        return [m for m in self.received if m.ending == "accepted"]

    def commands(self, verb: str) -> list[bytes]:
        """Every command line starting with `verb` (case-insensitive), in arrival order."""
        v = verb.upper().encode()
        return [c for s in self.sessions for c in s.commands if c[: len(v)].upper() == v]

    async def wait_until(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Return once `predicate()` holds (checked after every change the server sees);
        TimeoutError after `within` seconds."""
        async with asyncio.timeout(within):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- the dialogue -------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        conn = Connection(index=len(self.sessions), peer=str(peer[0]) if peer else "")
        self.sessions.append(conn)
        self._notify()
        io = _Io(reader, writer, conn)
        try:
            await self._dialogue(io)
        except (_Closed, ConnectionError, asyncio.CancelledError, ssl.SSLError, TimeoutError):
            pass
        except Exception as e:  # a test's callable or hook failed: stop() raises it
            self.errors.append(e)
        finally:
            self._tasks.discard(task)
            conn.closed = True
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            self._notify()

    async def _dialogue(self, io: _Io) -> None:
        b = self.behaviour
        await self._act(io, "greeting", b"", [Reply(f"220 {b.hostname} ESMTP")])
        while True:
            line = await self._line(io)
            if line is None:
                return
            io.conn.commands.append(line)
            self._notify()
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd.split(" ", 1)[0].upper()
            env = io.conn.envelope
            if verb in ("EHLO", "HELO"):
                io.conn.ehlo_names.append(cmd.split(" ", 1)[1] if " " in cmd else "")
                io.conn.envelope = Envelope()
                await self._act(io, "ehlo", line, [Reply(self._ehlo(io.conn, verb))])
            elif verb == "STARTTLS":
                if b.starttls is not None and not io.conn.tls:
                    default: list[Step] = [Reply("220 2.0.0 ready"), StartTls()]
                else:
                    default = [Reply("454 4.7.0 TLS not available")]
                await self._act(io, "starttls", line, default)
            elif verb == "MAIL":
                io.conn.envelope = env = Envelope(mail_from=_address(cmd))
                code = await self._act(io, "mail", line, [Reply("250 2.1.0 ok")])
                env.mail_accepted = code is not None and 200 <= code < 300
            elif verb == "RCPT":
                env.rcpts.append(_address(cmd))
                code = await self._act(io, "rcpt", line, [Reply("250 2.1.5 ok")])
                if code is not None and 200 <= code < 300:
                    env.accepted_rcpts += 1
            elif verb == "DATA":
                ok = not b.data_needs_rcpt or (env.mail_accepted and env.accepted_rcpts > 0)
                default = [Reply("354 go ahead" if ok else "554 5.5.1 no valid recipients")]
                code = await self._act(io, "data", line, default)
                if code is None or code == 354:  # no answer (Quiet) also lets the data come
                    await self._data(io)
            elif verb == "RSET":
                io.conn.envelope = Envelope()
                await self._act(io, "rset", line, [Reply("250 2.0.0 reset")])
            elif verb == "NOOP":
                await self._act(io, "noop", line, [Reply("250 2.0.0 ok")])
            elif verb == "QUIT":
                await self._act(io, "quit", line, [Reply("221 2.0.0 bye")])
                return
            else:
                await self._act(io, "other", line, [Reply("502 5.5.2 not implemented")])

    def _ehlo(self, conn: Connection, verb: str) -> str:
        b = self.behaviour
        if verb == "HELO":
            return f"250 {b.hostname}"
        words = [b.hostname]
        words += ["PIPELINING"] if b.pipelining else []
        words += ["SMTPUTF8"] if b.smtputf8 else []
        words += ["8BITMIME"] if b.eightbitmime else []
        words += ["STARTTLS"] if b.starttls is not None and not conn.tls else []
        words += list(b.extensions)
        return "\r\n".join([*(f"250-{w}" for w in words[:-1]), f"250 {words[-1]}"])

    async def _data(self, io: _Io) -> None:
        b = self.behaviour
        raw = io.conn.in_data = bytearray()
        self._arriving = io.conn
        lines: list[bytes] = []
        while True:
            line = await self._line(io)
            if line is None:
                return  # hung up mid-data: not a whole message
            if line == b".\r\n":
                break
            raw += line
            self._notify()
            if len(raw) > b.max_message:
                await self._write(io, b"552 5.3.4 message too big\r\n")
                raise _Closed
            lines.append(line[1:] if line.startswith(b".") else line)
            if len(lines) == 1 and "body" in b.replies:
                steps = self._steps(self._turn(io, "body", b""), "body", [])
                if await self._run(io, steps) is not None:
                    raise _Closed  # an early reply ends the transaction, and the connection
        env = io.conn.envelope
        msg = Message(
            peer=io.conn.peer,
            mail_from=env.mail_from,
            rcpts=list(env.rcpts),
            data=b"".join(lines),
            raw=bytes(raw) + b".\r\n",
            connection=io.conn.index,
            notes=env.notes,
        )
        self.received.append(msg)
        io.conn.messages.append(msg)
        default: list[Step] = [Reply("250 2.0.0 queued")]
        steps = self._steps(self._turn(io, "dot", b".\r\n"), "dot", default)
        io.conn.envelope = Envelope()  # the transaction ends with its dot
        head = b""
        for s in steps:  # the ending is known before a byte of the reply is written
            if isinstance(s, (Drop, Silent)):
                break
            if isinstance(s, _WRITES):
                head = _head(s)
                break
        code = _code(head)
        msg.ending = "unacked" if code is None else ("accepted" if code < 400 else "refused")
        msg.reply = head.decode("utf-8", "replace").split("\r\n", 1)[0] if code else ""
        if self.on_message is not None:
            self.on_message(msg)
        self._notify()
        await self._run(io, steps)

    # -- actions ------------------------------------------------------------------------------

    def _turn(self, io: _Io, phase: str, command: bytes) -> Turn:
        return Turn(phase=phase, command=command, connection=io.conn, server=self)

    def _steps(self, turn: Turn, phase: str, default: list[Step]) -> list[Step]:
        action = self.behaviour.replies.get(phase)
        steps = [Default()] if action is None else self._resolve(action, turn)
        out: list[Step] = []
        for s in steps:
            out.extend(default if isinstance(s, Default) else [s])
        return out

    def _resolve(self, action: Action | None, turn: Turn) -> list[Step]:
        if action is None:
            return [Default()]
        if isinstance(action, str):
            return _parse(action)
        if isinstance(action, bytes):
            return [Raw(action)]
        if isinstance(action, Step):
            return [action]
        if callable(action):
            return self._resolve(action(turn), turn)
        return [s for a in action for s in self._resolve(a, turn)]

    async def _act(self, io: _Io, phase: str, command: bytes, default: list[Step]) -> int | None:
        """Run the phase's action; the code of the first reply written (None: none)."""
        steps = self._steps(self._turn(io, phase, command), phase, default)
        first = await self._run(io, steps)
        return _code(first) if first else None

    async def _run(self, io: _Io, steps: list[Step]) -> bytes | None:
        """Run `steps`; the start of the first thing written (None: nothing)."""
        first: bytes | None = None
        for step in steps:
            if isinstance(step, _WRITES) and first is None:
                first = _head(step)
            await self._step(io, step)
        if first and _code(first) == 421:
            raise _Closed  # 421 closes the transmission channel (RFC 5321 3.8)
        return first

    async def _step(self, io: _Io, step: Step) -> None:
        if isinstance(step, Reply):
            await self._write(io, step.text.encode("utf-8", "surrogateescape") + b"\r\n")
        elif isinstance(step, Raw):
            await self._write(io, step.data)
        elif isinstance(step, Delay):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, Quiet):
            pass
        elif isinstance(step, Drop):
            if step.abort:
                io.writer.transport.abort()
            raise _Closed
        elif isinstance(step, Silent):
            await self._silence(io)
        elif isinstance(step, Tarpit):
            data = step.reply.encode() + b"\r\n" if isinstance(step.reply, str) else step.reply
            for i in range(len(data)):
                await self._write(io, data[i : i + 1])
                await asyncio.sleep(step.interval)
        elif isinstance(step, Endless):
            while True:
                await self._write(io, step.chunk)
                await asyncio.sleep(step.interval)
        elif isinstance(step, StartTls):
            assert self.behaviour.starttls is not None, "StartTls needs Behaviour.starttls"
            io.conn.discarded_at_starttls = bytes(io.buf)
            io.buf.clear()
            await io.writer.start_tls(self.behaviour.starttls)
            io.conn.tls = True
            self._notify()
        else:
            raise TypeError(f"not a step: {step!r}")

    async def _silence(self, io: _Io) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.behaviour.silence_cap):
                while await io.reader.read(1 << 16):
                    pass
        raise _Closed

    async def _write(self, io: _Io, data: bytes) -> None:
        if not io.answered:
            io.answered = True
            io.conn.flights += 1
        io.writer.write(data)
        await io.writer.drain()

    async def _line(self, io: _Io) -> bytes | None:
        """The next line (LF-terminated, as sent), or None when the client hung up."""
        while True:
            i = io.buf.find(b"\n")
            if i >= 0:
                line = bytes(io.buf[: i + 1])
                del io.buf[: i + 1]
                return line
            if len(io.buf) > self.behaviour.max_line:
                await self._write(io, b"500 5.5.6 line too long\r\n")
                raise _Closed
            chunk = await io.reader.read(1 << 16)
            if not chunk:
                return None
            io.answered = False
            io.buf += chunk
