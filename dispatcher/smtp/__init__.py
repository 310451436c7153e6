"""SMTP: the wire protocol, the `Session` seam and its two clients.

Owns: talking to one remote server per session (EHLO, STARTTLS, MAIL/RCPT/DATA, the final dot,
reply parsing and bounds). `session` holds the seam and the shared result types, so the two
clients (`pipelining`, the default, and `aiosmtplib_client`) import it and never each other.
Never does: routing, choosing IPs, touching the queue, or deciding what a reply means
(that is `dispatcher.engine.outcomes`).
"""

from __future__ import annotations

from dispatcher.config import Client
from dispatcher.smtp.aiosmtplib_client import SmtpSession
from dispatcher.smtp.pipelining import PipeliningSession
from dispatcher.smtp.session import MarkAt, Session, SessionTimeouts

__all__ = ["CLIENTS", "PipeliningSession", "Session", "SmtpSession", "make_session"]


CLIENTS: tuple[Client, ...] = tuple(Client)  # `[smtp] client`


def make_session(
    client: Client,
    host: str,
    port: int,
    *,
    source_ip: str | None,
    ehlo_name: str,
    timeouts: SessionTimeouts,
    starttls: bool = True,
    mark_at: MarkAt = MarkAt.DOT,
) -> Session:
    """A session of the chosen client kind (one of `CLIENTS`)."""
    if client == Client.PIPELINING:
        return PipeliningSession(
            host,
            port,
            source_ip=source_ip,
            ehlo_name=ehlo_name,
            timeouts=timeouts,
            starttls=starttls,
            mark_at=mark_at,
        )
    if client != Client.AIOSMTPLIB:
        raise ValueError(f"unknown SMTP client {client!r}; expected one of {', '.join(CLIENTS)}")
    return SmtpSession(
        host,
        port,
        source_ip=source_ip,
        ehlo_name=ehlo_name,
        timeouts=timeouts,
        starttls=starttls,
        mark_at=mark_at,
    )
