"""The `Session` seam and the result types both SMTP clients share.

`Session` is the seam: open, send one envelope and body, close. Expected SMTP failures come
back as `SendResult` values, never as exceptions.

The committing window is as narrow as the protocol allows (DESIGN.md, "Message states"):
after the server's 354 the whole body is written, its last CRLF included, and only the final
`.\r\n` is held back; then the caller's `Commit` is asked for its mark, and the dot is written
only once the mark is durable. `dot_written` flips when the dot is written. A link lost, or a
server speaking, while the mark is awaited means the dot was never written (a safe retry); a
mark not durable within `SessionTimeouts.mark` aborts the connection and releases the message;
a connection lost after the dot is ambiguous.
"""

from __future__ import annotations

import asyncio
import enum
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from typing import NamedTuple, Protocol

from dispatcher.config import SmtpConfig
from dispatcher.config.smtp import MarkAt as MarkAt  # re-exported for the clients and lanes
from dispatcher.errors import MaildispatchError
from dispatcher.smtp.reply import clean_text

_PERIOD = re.compile(rb"(?m)^\.")
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


class Phase(enum.StrEnum):
    """Where in the SMTP dialogue a result was decided."""

    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command (before the body)
    MARK = "mark"  # the committing mark was refused: lease lost
    DOT = "dot"  # reply to the final dot
    LOCAL = "local"  # refused locally (e.g. SMTPUTF8 needed but not offered)


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened to one envelope. `code` is None when no reply was received."""

    phase: Phase
    code: int | None
    text: str
    _: KW_ONLY
    dot_written: bool = False
    reusable: bool = True  # the session may carry another message

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code at the start of the reply text, if any."""
        m = _ENHANCED.match(self.text)
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else None


def _unverified_tls() -> ssl.SSLContext:
    # Opportunistic STARTTLS: encrypt when offered, never refuse on certificates (RFC 7435).
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_TLS_CONTEXT: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """One shared client context: building one costs milliseconds."""
    global _TLS_CONTEXT
    if _TLS_CONTEXT is None:
        _TLS_CONTEXT = _unverified_tls()
    return _TLS_CONTEXT


@dataclass(frozen=True, slots=True)
class SessionTimeouts:
    """Deadlines of one session; connect, command and data default to `[smtp]`'s."""

    connect: float = SmtpConfig().connect_timeout
    command: float = SmtpConfig().command_timeout
    data: float = SmtpConfig().data_timeout
    # How long the body may wait, written up to its final dot, for the committing mark: a
    # stalled database raises no error. Servers allow minutes per data block (RFC 5321
    # 4.5.3.2.5); past this the connection is aborted and the message released.
    mark: float = SmtpConfig().mark_timeout

    @classmethod
    def from_config(cls, smtp: SmtpConfig) -> SessionTimeouts:
        return cls(smtp.connect_timeout, smtp.command_timeout, smtp.data_timeout, smtp.mark_timeout)


class Commit(Protocol):
    """One message's committing mark, as its session sees it."""

    def request(self) -> Awaitable[bool]:
        """Ask for the mark; resolves True once durable, False when refused (lease lost)."""
        ...

    def cancel(self) -> None:
        """Give up the mark (a no-op when none was asked for): the dot will not be written."""
        ...

    def dot_written(self) -> None:
        """Told the moment the final dot is written."""
        ...


class Ahead(NamedTuple):
    """The next message's envelope, to be pipelined behind this message's dot.

    `commit` identifies it: the next `send` given the same commit object reads the replies
    instead of writing the commands again.
    """

    mail_from: str
    rcpt: str
    commit: Commit
    smtputf8: bool = False


class Session(Protocol):
    """The send interface the lanes use; `SmtpSession` and `PipeliningSession` provide it."""

    sent: int
    dot_written: bool  # the current message's final dot was written (never resend it)
    tls_active: bool

    @property
    def is_open(self) -> bool: ...

    @property
    def pipelining(self) -> bool:
        """True when `send(..., ahead=fn)` may put the next envelope on the wire with the dot."""
        ...

    def ahead_written(self, commit: Commit) -> bool:
        """True when the commands of the look-ahead with this commit are on the wire."""
        ...

    async def open(self) -> SendResult | None: ...

    async def send(
        self,
        mail_from: str,
        rcpt: str,
        body: bytes,
        commit: Commit,
        *,
        smtputf8: bool = False,
        ahead: Callable[[], Ahead | None] | None = None,
    ) -> SendResult: ...

    async def close(self) -> None: ...


class MarkTimeout(MaildispatchError, TimeoutError):
    """The committing mark was not durable within `SessionTimeouts.mark`."""

    code = "mark_timeout"

    def __init__(self, timeout: float) -> None:
        super().__init__(f"committing mark not durable within {timeout:g}s")
        self.timeout = timeout


def mark_timed_out(timeout: float) -> SendResult:
    """The result when the mark did not come in time: the dot was never written, the
    connection is dropped, and the message goes back to the queue (no attempt counted)."""
    return SendResult(Phase.MARK, None, f"released: {MarkTimeout(timeout)}", reusable=False)


def mark_refused() -> SendResult:
    return SendResult(Phase.MARK, None, "committing mark refused: lease lost", reusable=False)


def lost_before_dot(text: str, code: int | None = None) -> SendResult:
    """The link failed (or the server spoke) while the body waited for its mark: the dot
    was never written, so the message may be sent again."""
    return SendResult(Phase.DATA, code, f"before the final dot: {text}"[:300], reusable=False)


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on, and checked: the final dot (three bytes, written after a pause for the
    mark) must not wait for a delayed ACK. Raises OSError when it cannot be set."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
        raise OSError("TCP_NODELAY could not be set on the SMTP connection")


def describe_error(e: BaseException) -> str:
    """An exception as one short line fit for a reply text (no CR/LF)."""
    text = clean_text(str(e) or type(e).__name__)  # may quote the server's words
    return text.replace("\n", " ")[:300]
