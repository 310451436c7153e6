"""The aiosmtplib-based client behind the `Session` seam (`[smtp] client = "aiosmtplib"`).

It gives the same results as the pipelining client, in more round trips; it stays as the
reference and the fallback. The same committing rule: after 354 the body is written up to its
final dot, the mark is awaited while a read watches for an early reply or a lost link, then
the dot is written.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable

import aiosmtplib
from aiosmtplib.errors import (
    SMTPException,
    SMTPResponseException,
)

from dispatcher.smtp.reply import (
    MAX_REPLY_BYTES,
    MAX_REPLY_LINES,
    ReplyError,
    ReplyTooLong,
    clean_text,
)
from dispatcher.smtp.session import (
    Ahead,
    Commit,
    MarkAt,
    Phase,
    SendResult,
    SessionTimeouts,
    describe_error,
    lost_before_dot,
    mark_refused,
    mark_timed_out,
    set_nodelay,
    tls_context,
)

_PERIOD = re.compile(rb"(?m)^\.")


def _checked(code: int, message: str) -> str:
    """The reply's text, cleaned like the pipelining client's; ReplyError past the bounds.

    aiosmtplib holds a reply to 32 KB but not its line count, decodes invalid bytes as
    surrogates, and reports an unparsable reply as code -1.
    """
    if not 100 <= code <= 599:
        if "too long" in message.lower():  # aiosmtplib's own 32 KB bound
            raise ReplyTooLong(f"over {MAX_REPLY_BYTES} bytes")
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
        mark_at: MarkAt = MarkAt.DOT,
    ) -> None:
        self.host = host
        self.port = port
        self.source_ip = source_ip
        self.ehlo_name = ehlo_name
        self.timeouts = timeouts
        self.want_tls = starttls
        self.mark_at = mark_at
        self.tls_active = False
        self.sent = 0
        self.dot_written = False  # flips when the final dot is written: after it, never resend
        self._client: aiosmtplib.SMTP | None = None

    @property
    def is_open(self) -> bool:
        return self._client is not None and self._client.is_connected

    @property
    def pipelining(self) -> bool:
        return False  # aiosmtplib sends one command at a time: no send-ahead

    def ahead_written(self, commit: Commit) -> bool:
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
            assert client.transport is not None
            set_nodelay(client.transport)
        except OSError as e:
            await self.close()
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
        commit: Commit,
        *,
        smtputf8: bool = False,
        ahead: Callable[[], Ahead | None] | None = None,
    ) -> SendResult:
        """Send one envelope. `commit` is asked for its mark once the body is written up to
        the final dot (with `mark_at` "data": with MAIL, awaited before DATA); False means
        do not send.

        `ahead` is never called: this client does not pipeline (`pipelining` is False)."""
        self.dot_written = False
        client = self._client
        if client is None or not client.is_connected:
            commit.cancel()
            return SendResult(Phase.CONNECT, None, "session not open", reusable=False)
        options: list[str] = []
        if smtputf8:
            if not client.supports_extension("smtputf8"):
                commit.cancel()
                return SendResult(
                    Phase.LOCAL,
                    553,
                    "5.6.7 recipient needs SMTPUTF8, which the server does not offer",
                )
            options.append("SMTPUTF8")
        early = commit.request() if self.mark_at == MarkAt.DATA else None
        phase = Phase.MAIL
        try:
            _checked(
                *await client.mail(
                    mail_from, options=options, encoding="utf-8" if smtputf8 else "ascii"
                )
            )
            phase = Phase.RCPT
            _checked(*await client.rcpt(rcpt, encoding="utf-8" if smtputf8 else "ascii"))
            if early is not None:
                phase = Phase.MARK
                if not await early:
                    await self._reset()
                    return SendResult(Phase.MARK, None, "committing mark refused: lease lost")
            phase = Phase.DATA
            return await self._data(client, body, commit, late=early is None)
        except SMTPResponseException as e:
            if phase == Phase.MARK:
                phase = Phase.DATA
            commit.cancel()
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
            commit.cancel()
            await self._drop()
            return SendResult(phase, None, describe_error(e), reusable=False)
        except (SMTPException, OSError, ValueError) as e:
            commit.cancel()
            await self.close()
            return SendResult(phase, None, describe_error(e), reusable=False)
        except BaseException:
            # Cancelled (a deadline, shutdown) mid-dialogue: the server's state is unknown;
            # a QUIT could be read as message text. Drop the connection.
            commit.cancel()
            self._abort_now()
            raise

    async def _data(
        self, client: aiosmtplib.SMTP, body: bytes, commit: Commit, *, late: bool
    ) -> SendResult:
        protocol = client.protocol
        assert protocol is not None
        start = await protocol.execute_command(b"DATA", timeout=self.timeouts.command)
        _checked(*start)
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        payload = _PERIOD.sub(b"..", body)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        # A read armed from here on sees an early reply or a lost link while the mark is
        # awaited; after the dot, the same read is the dot's reply.
        reply_task: asyncio.Future[aiosmtplib.SMTPResponse] | None = None
        try:
            if late:
                try:
                    protocol.write(payload)
                except (SMTPException, OSError) as e:
                    commit.cancel()
                    await self.close()
                    return SendResult(Phase.DATA, None, describe_error(e), reusable=False)
                payload = b""
                mark = asyncio.ensure_future(commit.request())
                reply_task = asyncio.ensure_future(protocol.read_response(timeout=None))
                failure = await self._await_mark(mark, reply_task, commit)
                if failure is not None:
                    return failure
            try:
                protocol.write(payload + b".\r\n")
            except (SMTPException, OSError) as e:
                # The transport refused the write: nothing of the dot reached the wire.
                commit.cancel()
                await self.close()
                return SendResult(Phase.DATA, None, describe_error(e), reusable=False)
            self.dot_written = True
            commit.dot_written()
            if reply_task is None:
                reply_task = asyncio.ensure_future(protocol.read_response(timeout=None))
            try:
                try:
                    reply = await asyncio.wait_for(asyncio.shield(reply_task), self.timeouts.data)
                except SMTPResponseException as e:
                    _checked(e.code, e.message)  # a reply error: too long, malformed
                    raise
                text = _checked(*reply)
            except ReplyError as e:
                await self._drop()
                return SendResult(
                    Phase.DOT, None, describe_error(e), dot_written=True, reusable=False
                )
            except (SMTPException, OSError, TimeoutError) as e:
                await self.close()
                return SendResult(
                    Phase.DOT, None, describe_error(e), dot_written=True, reusable=False
                )
        finally:
            if reply_task is not None and not reply_task.done():
                reply_task.cancel()
        self.sent += 1
        return SendResult(Phase.DOT, reply.code, text, dot_written=True, reusable=reply.code != 421)

    async def _await_mark(
        self,
        mark: asyncio.Future[bool],
        reply_task: asyncio.Future[aiosmtplib.SMTPResponse],
        commit: Commit,
    ) -> SendResult | None:
        """None once the mark is durable; else the result, with the dot never written."""
        done, _ = await asyncio.wait(
            (mark, reply_task), timeout=self.timeouts.mark, return_when=asyncio.FIRST_COMPLETED
        )
        if reply_task in done:
            # The server spoke (or the link was lost) before the dot: it was never written.
            commit.cancel()
            exc = reply_task.exception()
            if exc is not None:
                text = describe_error(exc)
            else:
                reply = reply_task.result()
                text = f"unexpected reply: {reply.code} {clean_text(reply.message)[:200]}"
            await self._abort()
            return lost_before_dot(text)
        if not done:
            commit.cancel()
            await self._abort()
            return mark_timed_out(self.timeouts.mark)
        if mark.cancelled() or not mark.result():
            await self._abort()
            return mark_refused()
        return None

    async def _abort(self) -> None:
        """Drop the connection at once: DATA is open, only a drop ends it without a dot."""
        self._abort_now()

    def _abort_now(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            transport = client.transport
            if transport is not None:
                transport.abort()  # type: ignore[attr-defined]
            client.close()

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
