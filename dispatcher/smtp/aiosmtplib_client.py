"""The aiosmtplib-based client behind the `Session` seam (`[smtp] client = "aiosmtplib"`).

It gives the same results as the pipelining client, in more round trips; it stays as the
reference and the fallback.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable

import aiosmtplib
from aiosmtplib.errors import (
    SMTPException,
    SMTPResponseException,
)

from dispatcher.smtp.reply import MAX_REPLY_LINES, ReplyError, ReplyTooLong, clean_text
from dispatcher.smtp.session import (
    Ahead,
    Phase,
    SendResult,
    SessionTimeouts,
    cancel_mark,
    describe_error,
    tls_context,
)

_PERIOD = re.compile(rb"(?m)^\.")


def _checked(code: int, message: str) -> str:
    """The reply's text, cleaned like the pipelining client's; ReplyError past the bounds.

    aiosmtplib holds a reply to 32 KB but not its line count, decodes invalid bytes as
    surrogates, and reports an unparsable reply as code -1.
    """
    if not 100 <= code <= 599:
        raise ReplyError(f"malformed SMTP reply: {clean_text(message)[:80]!r}")
    if message.count("\n") >= MAX_REPLY_LINES:
        raise ReplyTooLong(f"over {MAX_REPLY_LINES} lines")
    return clean_text(message)


class SmtpSession:
    """One connection from `source_ip` to `host:port`, reusable for many messages."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        source_ip: str | None,
        ehlo_name: str,
        timeouts: SessionTimeouts,
        starttls: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.source_ip = source_ip
        self.ehlo_name = ehlo_name
        self.timeouts = timeouts
        self.want_tls = starttls
        self.tls_active = False
        self.sent = 0
        self.dot_started = False  # set before the body is written: after it, never resend
        self._client: aiosmtplib.SMTP | None = None

    @property
    def is_open(self) -> bool:
        return self._client is not None and self._client.is_connected

    @property
    def pipelining(self) -> bool:
        return False  # aiosmtplib sends one command at a time: no send-ahead

    def ahead_written(self, mark: Awaitable[bool]) -> bool:
        return False

    async def open(self) -> SendResult | None:
        """Connect, read the greeting, EHLO, and STARTTLS when offered.

        Returns None on success, else the failing result. If the TLS handshake fails the
        host is retried once in plaintext.
        """
        result = await self._open(self.want_tls)
        if result is not None and result.phase == Phase.STARTTLS:
            await self.close()
            result = await self._open(False)
        return result

    async def _open(self, try_tls: bool) -> SendResult | None:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self.ehlo_name,
            source_address=(self.source_ip, 0) if self.source_ip else None,
            timeout=self.timeouts.command,
            start_tls=False,
            validate_certs=False,
        )
        self._client = client
        try:
            await client.connect(timeout=self.timeouts.connect)
        except aiosmtplib.SMTPConnectResponseError as e:
            self._client = None
            client.close()
            try:
                return SendResult(
                    Phase.GREETING, e.code, _checked(e.code, e.message), reusable=False
                )
            except ReplyError as bad:
                return SendResult(Phase.CONNECT, None, describe_error(bad), reusable=False)
        except (SMTPException, OSError) as e:
            self._client = None
            return SendResult(Phase.CONNECT, None, describe_error(e), reusable=False)
        try:
            _checked(*await client.ehlo())
        except SMTPResponseException as e:
            await self.close()
            try:
                return SendResult(Phase.EHLO, e.code, _checked(e.code, e.message), reusable=False)
            except ReplyError as bad:
                return SendResult(Phase.EHLO, None, describe_error(bad), reusable=False)
        except (SMTPException, OSError) as e:
            await self.close()
            return SendResult(Phase.EHLO, None, describe_error(e), reusable=False)
        if try_tls and client.supports_extension("starttls"):
            try:
                await client.starttls(tls_context=tls_context(), validate_certs=False)
                self.tls_active = True
            except (SMTPException, OSError, ssl.SSLError) as e:
                return SendResult(Phase.STARTTLS, None, describe_error(e), reusable=False)
        return None

    async def send(
        self,
        mail_from: str,
        rcpt: str,
        body: bytes,
        mark: Awaitable[bool],
        *,
        smtputf8: bool = False,
        ahead: Callable[[], Ahead | None] | None = None,
    ) -> SendResult:
        """Send one envelope. `mark` is awaited before DATA; False means do not send.

        `ahead` is never called: this client does not pipeline (`pipelining` is False)."""
        self.dot_started = False
        client = self._client
        if client is None or not client.is_connected:
            return SendResult(Phase.CONNECT, None, "session not open", reusable=False)
        options: list[str] = []
        if smtputf8:
            if not client.supports_extension("smtputf8"):
                cancel_mark(mark)
                return SendResult(
                    Phase.LOCAL,
                    553,
                    "5.6.7 recipient needs SMTPUTF8, which the server does not offer",
                )
            options.append("SMTPUTF8")
        phase = Phase.MAIL
        try:
            _checked(
                *await client.mail(
                    mail_from, options=options, encoding="utf-8" if smtputf8 else "ascii"
                )
            )
            phase = Phase.RCPT
            _checked(*await client.rcpt(rcpt, encoding="utf-8" if smtputf8 else "ascii"))
            phase = Phase.MARK
            if not await mark:
                await self._reset()
                return SendResult(Phase.MARK, None, "committing mark refused: lease lost")
            phase = Phase.DATA
            return await self._data(client, body)
        except SMTPResponseException as e:
            if phase == Phase.MARK:
                phase = Phase.DATA
            cancel_mark(mark)
            try:
                text = _checked(e.code, e.message)
            except ReplyError as bad:
                await self._drop()
                return SendResult(phase, None, describe_error(bad), reusable=False)
            ok = e.code < 500 or phase in (Phase.RCPT, Phase.MAIL)
            if ok and e.code != 421:
                await self._reset()
            return SendResult(phase, e.code, text, reusable=e.code != 421 and self.is_open)
        except ReplyError as e:
            cancel_mark(mark)
            await self._drop()
            return SendResult(phase, None, describe_error(e), reusable=False)
        except (SMTPException, OSError, ValueError) as e:
            cancel_mark(mark)
            await self.close()
            return SendResult(phase, None, describe_error(e), reusable=False)

    async def _data(self, client: aiosmtplib.SMTP, body: bytes) -> SendResult:
        protocol = client.protocol
        assert protocol is not None
        start = await protocol.execute_command(b"DATA", timeout=self.timeouts.command)
        _checked(*start)
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        payload = _PERIOD.sub(b"..", body)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        self.dot_started = True
        try:
            protocol.write(payload + b".\r\n")
        except (SMTPException, OSError) as e:
            # The transport refused the write: nothing of the dot reached the wire.
            await self.close()
            return SendResult(Phase.DATA, None, describe_error(e), reusable=False)
        try:
            reply = await protocol.read_response(timeout=self.timeouts.data)
            text = _checked(*reply)
        except ReplyError as e:
            await self._drop()
            return SendResult(Phase.DOT, None, describe_error(e), dot_written=True, reusable=False)
        except (SMTPException, OSError) as e:
            await self.close()
            return SendResult(Phase.DOT, None, describe_error(e), dot_written=True, reusable=False)
        self.sent += 1
        return SendResult(Phase.DOT, reply.code, text, dot_written=True, reusable=reply.code != 421)

    async def _reset(self) -> None:
        client = self._client
        if client is None or not client.is_connected:
            return
        try:
            await client.rset()
        except (SMTPException, OSError):
            await self.close()

    async def _drop(self) -> None:
        """Drop the connection without QUIT (the server's replies cannot be trusted)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def close(self) -> None:
        """QUIT politely when possible, then drop the connection."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.is_connected:
                await asyncio.wait_for(client.quit(), timeout=2.0)
        except (SMTPException, OSError, TimeoutError):
            pass
        finally:
            client.close()
