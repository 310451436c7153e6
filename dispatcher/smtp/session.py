"""The `Session` seam and the result types both SMTP clients share.

`Session` is the seam: open, send one envelope and body, close. Expected SMTP failures come
back as `SendResult` values, never as exceptions.

The final dot is written only after the caller's `committing` mark resolves True, and the
result says whether the dot was written: a connection lost before it is a safe retry, one lost
after it is ambiguous.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from dispatcher.smtp.reply import clean_text

_PERIOD = re.compile(rb"(?m)^\.")
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


class Phase:
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

    phase: str
    code: int | None
    text: str
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
    connect: float = 10.0
    command: float = 60.0
    data: float = 600.0


class Ahead(NamedTuple):
    """The next message's envelope, to be pipelined behind this message's dot.

    `mark` identifies it: the next `send` given the same mark object reads the replies
    instead of writing the commands again.
    """

    mail_from: str
    rcpt: str
    mark: Awaitable[bool]
    smtputf8: bool = False


class Session(Protocol):
    """The send interface the lanes use; `SmtpSession` and `PipeliningSession` provide it."""

    sent: int
    dot_started: bool
    tls_active: bool

    @property
    def is_open(self) -> bool: ...

    @property
    def pipelining(self) -> bool:
        """True when `send(..., ahead=fn)` may put the next envelope on the wire with the dot."""
        ...

    def ahead_written(self, mark: Awaitable[bool]) -> bool:
        """True when the commands of the look-ahead with this mark are on the wire."""
        ...

    async def open(self) -> SendResult | None: ...

    async def send(
        self,
        mail_from: str,
        rcpt: str,
        body: bytes,
        mark: Awaitable[bool],
        *,
        smtputf8: bool = False,
        ahead: Callable[[], Ahead | None] | None = None,
    ) -> SendResult: ...

    async def close(self) -> None: ...


def cancel_mark(mark: Awaitable[bool]) -> None:
    """Give up a mark that will not be awaited."""
    if isinstance(mark, asyncio.Future):
        if not mark.done():
            mark.cancel()
    elif asyncio.iscoroutine(mark):
        mark.close()


def describe_error(e: BaseException) -> str:
    """An exception as one short line fit for a reply text (no CR/LF)."""
    text = clean_text(str(e) or type(e).__name__)  # may quote the server's words
    return text.replace("\n", " ")[:300]
