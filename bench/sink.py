"""A minimal, fast SMTP sink: an asyncio.Protocol that accepts everything.

Line based; message bodies are not parsed beyond finding the terminating CRLF.CRLF and the
Message-ID header (for arrival times). Offers PIPELINING and, given a TLS context, STARTTLS.

With `delay` > 0 it models a distant server: every *flight* (one read from the client that
yields at least one reply: a single command or a pipelined group, or the end of the data)
is answered `delay` seconds after it arrived; the greeting is delayed the same way (the
connection's own round trip). Counting flights per message tells how many round trips a
client needs.

Separate from the shared test server (tests/support/smtp_server.py) on purpose: this one is
part of the benchmarks and must cost the engine under test as little CPU as possible (one
Protocol, no per-command objects, no faults); the test server trades that speed for control
over every reply and byte.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import cast

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)
_STUFFED = re.compile(rb"(?m)^\.\.")
_MAX_LINE = 64 * 1024


@dataclass(slots=True)
class Arrival:
    """One accepted message: when it arrived and how to match it to its enqueue."""

    time: float
    message_id: str
    rcpt: str
    size: int


@dataclass(slots=True)
class ReceivedMessage:
    """A kept message (only when `SinkOptions.keep` is set, for tests)."""

    sender: str
    rcpts: list[str]
    data: bytes  # dot-unstuffed, CRLF line ends, without the terminating dot line


@dataclass(frozen=True, slots=True)
class SinkOptions:
    """How the sink behaves; `tls` enables STARTTLS."""

    delay: float = 0.0
    tls: ssl.SSLContext | None = None
    keep: bool = False
    hostname: str = "sink.bench.example"


@dataclass(slots=True)
class SinkStats:
    """Counters shared by every connection of one sink."""

    connections: int = 0
    flights: int = 0
    messages: int = 0
    bytes: int = 0
    tls_sessions: int = 0
    arrivals: list[Arrival] = field(default_factory=list)
    kept: list[ReceivedMessage] = field(default_factory=list)


def _ehlo_reply(hostname: str, starttls: bool) -> bytes:
    lines = [
        hostname,
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE 104857600",
        "ENHANCEDSTATUSCODES",
    ]
    if starttls:
        lines.append("STARTTLS")
    out = [f"250-{x}\r\n" for x in lines[:-1]] + [f"250 {lines[-1]}\r\n"]
    return "".join(out).encode("ascii")


class SinkProtocol(asyncio.Protocol):
    """One SMTP server connection."""

    def __init__(self, options: SinkOptions, stats: SinkStats) -> None:
        self.options = options
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._in_data = False
        self._scan_from = 0
        self._tls_active = False
        self._upgrading = False
        self._sender = ""
        self._rcpts: list[str] = []
        # (due time, bytes, action after the write) of delayed replies, in order.
        self._pending: deque[tuple[float, bytes, str]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._tls_task: asyncio.Future[None] | None = None
        self._ehlo_plain = _ehlo_reply(options.hostname, options.tls is not None)
        self._ehlo_tls = _ehlo_reply(options.hostname, False)

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._upgrading:  # start_tls hands the new transport over this way on some loops
            return
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.stats.connections += 1
        self._send(f"220 {self.options.hostname} ESMTP bench sink\r\n".encode("ascii"), "")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._pending.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._upgrading:
            # Decrypted data can arrive before start_tls() has returned the new transport
            # (TLS 1.3 lets the client send EHLO with its Finished): hold it until then.
            return
        self._feed()

    def _feed(self) -> None:
        out = bytearray()
        action = self._process(out)
        if out:
            self.stats.flights += 1
            self._send(bytes(out), action)
        elif action:
            self._after_write(action)

    # -- replies, possibly delayed ------------------------------------------------------------

    def _send(self, data: bytes, action: str) -> None:
        if self.options.delay <= 0:
            if self.transport is not None:
                self.transport.write(data)
            self._after_write(action)
            return
        loop = asyncio.get_running_loop()
        self._pending.append((loop.time() + self.options.delay, data, action))
        if self._timer is None:
            self._timer = loop.call_at(self._pending[0][0], self._flush)

    def _flush(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._pending and self._pending[0][0] <= now + 0.0005:
            _, data, action = self._pending.popleft()
            if self.transport is not None:
                self.transport.write(data)
            self._after_write(action)
        if self._pending and self.transport is not None:
            self._timer = loop.call_at(self._pending[0][0], self._flush)

    def _after_write(self, action: str) -> None:
        if action == "close" and self.transport is not None:
            self.transport.close()
        elif action == "starttls":
            self._tls_task = asyncio.ensure_future(self._start_tls())

    async def _start_tls(self) -> None:
        transport, ctx = self.transport, self.options.tls
        if transport is None or ctx is None:
            return
        try:
            new = await asyncio.get_running_loop().start_tls(transport, self, ctx, server_side=True)
        except (OSError, ssl.SSLError):
            transport.abort()
            return
        if new is None:
            transport.abort()
            return
        self.transport = new
        self._upgrading = False
        self._tls_active = True
        self.stats.tls_sessions += 1
        self._sender, self._rcpts = "", []
        if self._buf:
            self._feed()

    # -- the SMTP state machine ---------------------------------------------------------------

    def _process(self, out: bytearray) -> str:
        """Consume complete commands and messages from the buffer; return an action."""
        buf = self._buf
        pos = 0
        action = ""
        while pos < len(buf):
            if self._in_data:
                end = self._find_end(pos)
                if end < 0:
                    break
                self._accept(pos, end)
                out += b"250 2.0.0 Ok: queued\r\n"
                pos = end + 3 if end == pos else end + 5
                self._in_data = False
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > _MAX_LINE:
                    out += b"500 5.5.6 Line too long\r\n"
                    action, pos = "close", len(buf)
                break
            line = bytes(buf[pos:nl]).rstrip(b"\r")
            pos = nl + 1
            action = self._command(line, out)
            if action:
                pos = len(buf)  # nothing after QUIT or STARTTLS is read (RFC 3207 section 4.2)
                break
        del buf[:pos]
        self._scan_from = max(0, len(buf) - 4) if self._in_data else 0
        return action

    def _find_end(self, start: int) -> int:
        """Index where the terminating dot line starts (CRLF.CRLF, or .CRLF at data start)."""
        buf = self._buf
        if buf.startswith(b".\r\n", start):
            return start
        end = buf.find(b"\r\n.\r\n", max(start, self._scan_from))
        if end < 0:
            self._scan_from = max(start, len(buf) - 4)
        return end

    def _accept(self, start: int, end: int) -> None:
        raw = bytes(self._buf[start : end + 2]) if end > start else b""
        stats = self.stats
        stats.messages += 1
        stats.bytes += len(raw)
        head_end = raw.find(b"\r\n\r\n")
        m = _MESSAGE_ID.search(raw, 0, head_end if head_end >= 0 else len(raw))
        mid = m.group(1).decode("ascii", "replace") if m else ""
        rcpt = self._rcpts[0] if self._rcpts else ""
        stats.arrivals.append(Arrival(time.time(), mid, rcpt, len(raw)))
        if self.options.keep:
            stats.kept.append(ReceivedMessage(self._sender, list(self._rcpts), unstuff(raw)))
        self._sender, self._rcpts = "", []

    def _command(self, line: bytes, out: bytearray) -> str:
        verb = line[:4].upper()
        if verb == b"MAIL":
            self._sender = _address(line)
            self._rcpts = []
            out += b"250 2.1.0 Ok\r\n"
        elif verb == b"RCPT":
            self._rcpts.append(_address(line))
            out += b"250 2.1.5 Ok\r\n"
        elif verb == b"DATA":
            if not self._rcpts:
                out += b"503 5.5.1 No valid recipients\r\n"
            else:
                out += b"354 End data with <CR><LF>.<CR><LF>\r\n"
                self._in_data = True
                self._scan_from = 0
        elif verb in (b"EHLO", b"HELO"):
            if verb == b"HELO":
                out += f"250 {self.options.hostname}\r\n".encode("ascii")
            else:
                out += self._ehlo_tls if self._tls_active else self._ehlo_plain
            self._sender, self._rcpts = "", []
        elif verb == b"RSET":
            self._sender, self._rcpts = "", []
            out += b"250 2.0.0 Ok\r\n"
        elif verb == b"NOOP":
            out += b"250 2.0.0 Ok\r\n"
        elif verb == b"QUIT":
            out += b"221 2.0.0 Bye\r\n"
            return "close"
        elif line.upper() == b"STARTTLS" and self.options.tls is not None and not self._tls_active:
            out += b"220 2.0.0 Ready to start TLS\r\n"
            # Plaintext pipelined after STARTTLS is discarded (by the caller) and no more is
            # read until the handshake (RFC 3207 section 4.2).
            self._upgrading = True
            if self.transport is not None:
                self.transport.pause_reading()
            return "starttls"
        else:
            out += b"502 5.5.2 Command not recognized\r\n"
        return ""


def _address(line: bytes) -> str:
    start, end = line.find(b"<"), line.find(b">")
    if start < 0 or end < start:
        return ""
    return line[start + 1 : end].decode("utf-8", "replace")


def unstuff(raw: bytes) -> bytes:
    """Undo SMTP dot-stuffing (RFC 5321 section 4.5.2)."""
    return _STUFFED.sub(b".", raw)


class Sink:
    """A running sink server: `port`, `stats`, and `close()`."""

    def __init__(self, server: asyncio.Server, stats: SinkStats) -> None:
        self.server = server
        self.stats = stats

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_sink(
    options: SinkOptions | None = None, host: str = "127.0.0.1", port: int = 0
) -> Sink:
    """Listen on host:port (0: any free port) and serve until `close()`."""
    opts = options or SinkOptions()
    stats = SinkStats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkProtocol(opts, stats), host, port, backlog=1024, reuse_address=True
    )
    return Sink(server, stats)
