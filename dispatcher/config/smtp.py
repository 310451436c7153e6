"""`[smtp]`: timeouts, STARTTLS policy, which client, send-ahead, the committing mark, the
circuit breaker."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table


class StartTls(enum.StrEnum):
    OPPORTUNISTIC = "opportunistic"  # when the server offers it
    NEVER = "never"


class MarkAt(enum.StrEnum):
    """When a session asks for the `committing` mark."""

    DOT = "dot"  # the body written up to its final dot: a crash holds only what may be sent
    DATA = "data"  # with MAIL, awaited before the body: the wider window, kept for comparison


class Client(enum.StrEnum):
    PIPELINING = "pipelining"  # the project's RFC 2920 client: 2 round trips per message
    AIOSMTPLIB = "aiosmtplib"  # the fallback


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    # The reply to the final dot is awaited patiently (RFC 5321 4.5.3.2.6: 10 minutes).
    data_timeout: float = 600.0
    starttls: StartTls = StartTls.OPPORTUNISTIC
    client: Client = Client.PIPELINING
    # Pipelining client only: the next message's MAIL/RCPT/DATA ride with this one's dot.
    send_ahead: bool = True
    mark_at: MarkAt = MarkAt.DOT
    # The body waits this long, written up to its final dot, for its mark (a stalled database
    # raises no error); then the connection is aborted and the message released.
    mark_timeout: float = 10.0
    circuit_failures: int = 3
    circuit_open_seconds: float = 30.0
    # One message, from its MAIL (or the connect that opens its session) until its final
    # dot is written; after the dot only data_timeout applies (a deadline there would
    # manufacture ambiguity).
    message_deadline: float = 120.0
    # A session carries no new message once it is this old (checked between messages).
    session_deadline: float = 600.0


SECTION = Section(
    "smtp",
    (
        "connect_timeout",
        "command_timeout",
        "data_timeout",
        "starttls",
        "client",
        "send_ahead",
        "mark_at",
        "mark_timeout",
        "circuit_failures",
        "circuit_open_seconds",
        "message_deadline",
        "session_deadline",
    ),
)


def parse_smtp(t: Table) -> SmtpConfig:
    base = SmtpConfig()
    smtp = SmtpConfig(
        connect_timeout=t.duration("connect_timeout", base.connect_timeout),
        command_timeout=t.duration("command_timeout", base.command_timeout),
        data_timeout=t.duration("data_timeout", base.data_timeout),
        starttls=t.choice("starttls", base.starttls),
        client=t.choice("client", base.client),
        send_ahead=t.flag("send_ahead", base.send_ahead),
        mark_at=t.choice("mark_at", base.mark_at),
        mark_timeout=t.duration("mark_timeout", base.mark_timeout),
        circuit_failures=t.integer("circuit_failures", base.circuit_failures, minimum=1),
        circuit_open_seconds=t.duration("circuit_open_seconds", base.circuit_open_seconds),
        message_deadline=t.duration("message_deadline", base.message_deadline),
        session_deadline=t.duration("session_deadline", base.session_deadline),
    )
    for name in ("message_deadline", "session_deadline"):
        if getattr(smtp, name) <= 0.0:
            raise ConfigError(field=f"smtp.{name}", reason="must be above 0")
    t.done()
    return smtp
