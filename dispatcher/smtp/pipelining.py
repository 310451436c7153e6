"""A lean SMTP client with command pipelining (RFC 2920) behind the `Session` seam.

Per message, when the server offers PIPELINING: MAIL, RCPT and DATA go out in one write and
their three replies are read in order; on 354 the dot-stuffed body goes out up to its last
CRLF, the committing mark is asked for, and the final dot is written once the mark is durable
(the link watched meanwhile: a loss or an early reply means the dot was never written). Two
round trips per message instead of aiosmtplib's four, plus the mark's write. Without
PIPELINING, one command per round trip (still correct).

Results are the same `SendResult` values the aiosmtplib session gives: same phases, codes and
reply text (multi-line replies joined with "\\n"), `dot_written` True once the dot was
written, `reusable` False after 421 or a lost connection.

Send-ahead (`send(..., ahead=fn)`): when the final dot is about to be written, `fn()` may
name the next envelope; its MAIL, RCPT and DATA then go out in the same write, so in steady
state a message costs one round trip. The look-ahead's replies are read by the next `send`
for it, and its own mark is asked for after its own body. A refusal of the look-ahead's RCPT
leaves a RSET owed, sent in front of the next envelope.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable, Callable

from dispatcher.errors import MaildispatchError
from dispatcher.smtp.reply import Reply, ReplyError, ReplyParser
from dispatcher.smtp.session import (
    Ahead,
    Commit,
    MarkAt,
    MarkTimeout,
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

_QUIT_TIMEOUT = 2.0
_BAD_ADDRESS_CHARS = frozenset("<>\r\n \t")
_PIPELINED_PHASES = (Phase.MAIL, Phase.RCPT, Phase.DATA)
_PIPELINED_OK = (frozenset({250}), frozenset({250, 251}), frozenset({354}))


class ReplyTimeout(MaildispatchError, TimeoutError):
    """No complete reply within `timeout` seconds."""

    code = "reply_timeout"

    def __init__(self, timeout: float) -> None:
        super().__init__(f"timed out after {timeout:g}s waiting for the server's reply")
        self.timeout = timeout


class LinkLost(MaildispatchError, ConnectionError):
    """The connection is gone (or was never there); `reason` says how."""

    code = "link_lost"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_DOT = b".\r\n"


def stuff_body(body: bytes) -> bytes:
    """`body` dot-stuffed (RFC 5321 4.5.2) and CRLF-terminated: the DATA payload up to, and
    without, the final dot.

    Every line starting with "." gets another one (after a bare LF too, as aiosmtplib does),
    so CRLF.CRLF never appears before the end.
    """
    payload = body.replace(b"\n.", b"\n..")
    if payload.startswith(b"."):
        payload = b"." + payload
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    return payload


def stuff(body: bytes) -> bytes:
    """The whole DATA payload: `stuff_body(body)` plus the final dot."""
    return stuff_body(body) + _DOT


class _Link(asyncio.Protocol):
    """The connection: writes bytes, parses replies into a queue that `read` hands out."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = ReplyParser()
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[Reply] | None = None
        self._expected = 1  # replies owed by the server: the greeting first
        self.error: ConnectionError | None = None  # set once the dialogue cannot go on

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        try:
            set_nodelay(transport)
        except OSError as e:
            self._fail(LinkLost(str(e)))
            transport.abort()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(LinkLost("connection lost" if exc is None else f"connection lost: {exc}"))

    def eof_received(self) -> bool:
        self._fail(LinkLost("connection closed by the server"))
        return False  # close our side too

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ReplyError as e:
            # Not SMTP, or a reply past its bounds: the dialogue cannot go on.
            self._fail(e)
            self.abort()
            return
        for reply in replies:
            if self._expected == 0:
                # Unasked for (typically "421 idle timeout" before a hang-up, or a server
                # answering ahead of commands): it would be taken for the reply to our next
                # command. The link is done.
                self._fail(LinkLost(f"unexpected reply from the server: {reply.code} {reply.text}"))
                self.abort()
                return
            self._expected -= 1
            self._deliver(reply)

    # -- used by the session -----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        t = self.transport
        return t is not None and self.error is None and not t.is_closing()

    def write(self, data: bytes, replies: int) -> None:
        """Queue bytes for the wire, which will earn `replies` replies; raises LinkLost when
        they cannot go out."""
        t = self.transport
        if t is None or self.error is not None or t.is_closing():
            raise self.error or LinkLost("connection lost")
        # No drain: every write is followed by awaiting a reply, which bounds the buffer.
        t.write(data)
        self._expected += replies

    async def read(self, limit: float) -> Reply:
        """The next reply within `limit` seconds; raises ReplyTimeout, LinkLost, ReplyError.

        A timer on the future rather than asyncio.timeout(): cheaper, and this is per reply.
        """
        if self._replies:
            return self._replies.popleft()
        if self.error is not None:
            raise self.error
        fut: asyncio.Future[Reply] = self._loop.create_future()
        self._waiter = fut
        timer = self._loop.call_later(limit, self._expire, fut, limit)
        try:
            return await fut
        finally:
            timer.cancel()
            self._waiter = None

    async def hold(self, mark: asyncio.Future[bool], limit: float) -> bool:
        """Await the committing mark while watching the link (nothing is owed by the server
        meanwhile: any reply, or a loss, fails the link). Raises LinkLost when the link
        fails first, MarkTimeout after `limit` seconds; returns whether the mark was granted.
        """
        if mark.done():
            return not mark.cancelled() and mark.result()
        if self.error is not None:
            raise self.error
        fut: asyncio.Future[Reply] = self._loop.create_future()
        self._waiter = fut

        def resolved(_: asyncio.Future[bool]) -> None:
            if not fut.done():
                fut.set_result(Reply(0, ""))

        mark.add_done_callback(resolved)
        timer = self._loop.call_later(limit, self._expire_mark, fut, limit)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None
            mark.remove_done_callback(resolved)
        return not mark.cancelled() and mark.result()

    def _expire_mark(self, fut: asyncio.Future[Reply], limit: float) -> None:
        if not fut.done():
            fut.set_exception(MarkTimeout(limit))

    def discard_replies(self) -> None:
        """Forget anything received so far (plaintext sent after STARTTLS's 220: RFC 3207)."""
        self._replies.clear()
        self._parser.reset()
        self._expected = 0

    def abort(self) -> None:
        """Drop the connection now, without flushing (nothing more may reach the server)."""
        t = self.transport
        if t is not None:
            t.abort()

    def close(self) -> None:
        t = self.transport
        if t is not None:
            t.close()

    # -- internals ---------------------------------------------------------------------------

    def _deliver(self, reply: Reply) -> None:
        w = self._waiter
        if w is not None and not w.done() and not self._replies:
            w.set_result(reply)
        else:
            self._replies.append(reply)

    def _fail(self, error: ConnectionError) -> None:
        if self.error is None:
            self.error = error
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(self.error)

    def _expire(self, fut: asyncio.Future[Reply], timeout: float) -> None:
        if not fut.done():
            # A late reply would be paired with the wrong command: the link is unusable.
            self._fail(LinkLost("gave up waiting for a reply"))
            if not fut.done():
                fut.set_exception(ReplyTimeout(timeout))
            self.abort()


class PipeliningSession:
    """One connection from `source_ip` to `host:port`, reusable for many messages.

    Same interface and results as `dispatcher.smtp.aiosmtplib_client.SmtpSession`.
    """

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
        self.extensions: frozenset[str] = frozenset()
        self._link: _Link | None = None
        # False while a transaction is open on the server (after 354, before the dot's reply):
        # then QUIT would be read as message text, so close() drops the connection instead.
        self._idle = True
        # Send-ahead: the commit of the envelope whose commands are on the wire, replies
        # unread, and (mark_at "data" only) its mark, asked for when they were written.
        self._begun: Commit | None = None
        self._begun_mark: Awaitable[bool] | None = None
        self._rset_due = False  # a refused look-ahead left a transaction to reset

    @property
    def is_open(self) -> bool:
        return self._link is not None and self._link.is_open

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    def ahead_written(self, commit: Commit) -> bool:
        """True when the commands of the envelope with this commit are on the wire."""
        return self._begun is commit and self.is_open

    # -- opening -----------------------------------------------------------------------------

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
        self.tls_active = False
        self._idle = True
        self._begun = None
        self._begun_mark = None
        self._rset_due = False
        loop = asyncio.get_running_loop()
        link = _Link(loop)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: link,
                    self.host,
                    self.port,
                    local_addr=(self.source_ip, 0) if self.source_ip else None,
                ),
                timeout=self.timeouts.connect,
            )
            greeting = await link.read(self.timeouts.connect)
        except (OSError, TimeoutError) as e:
            link.abort()
            return SendResult(Phase.CONNECT, None, describe_error(e), reusable=False)
        self._link = link
        if greeting.code != 220:
            self._drop()
            return SendResult(Phase.GREETING, greeting.code, greeting.text, reusable=False)
        failure = await self._ehlo(Phase.EHLO)
        if failure is not None:
            return failure
        if try_tls and "STARTTLS" in self.extensions:
            return await self._starttls(loop, link)
        return None

    async def _ehlo(self, phase: Phase) -> SendResult | None:
        link = self._link
        assert link is not None
        try:
            link.write(b"EHLO " + self.ehlo_name.encode("ascii") + b"\r\n", 1)
            reply = await link.read(self.timeouts.command)
        except (OSError, UnicodeError) as e:
            await self.close()
            return SendResult(phase, None, describe_error(e), reusable=False)
        if reply.code != 250:
            await self.close()
            return SendResult(Phase.EHLO, reply.code, reply.text, reusable=False)
        lines = reply.text.split("\n")[1:]
        self.extensions = frozenset(line.split(" ", 1)[0].upper() for line in lines if line)
        return None

    async def _starttls(self, loop: asyncio.AbstractEventLoop, link: _Link) -> SendResult | None:
        self._idle = False  # from here on a QUIT in plaintext would only confuse the server
        try:
            link.write(b"STARTTLS\r\n", 1)
            reply = await link.read(self.timeouts.command)
            if reply.code != 220:
                return SendResult(
                    Phase.STARTTLS,
                    None,
                    f"{reply.code} {reply.text}",
                    dot_written=False,
                    reusable=False,
                )
            link.discard_replies()
            transport = link.transport
            if transport is None:
                raise LinkLost("connection lost")
            new = await asyncio.wait_for(
                loop.start_tls(transport, link, tls_context(), server_hostname=self.host),
                timeout=self.timeouts.command,
            )
        except (OSError, TimeoutError, ssl.SSLError) as e:
            return SendResult(Phase.STARTTLS, None, describe_error(e), reusable=False)
        if new is None:
            return SendResult(Phase.STARTTLS, None, "TLS handshake failed", reusable=False)
        link.transport = new
        self.tls_active = True
        self._idle = True
        # RFC 3207 4.2: forget what was learnt in plaintext and ask again. A server whose TLS
        # is broken past the handshake is retried in plaintext, like a failed handshake.
        return await self._ehlo(Phase.STARTTLS)

    # -- sending -----------------------------------------------------------------------------

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
        the final dot (with `mark_at` "data": with MAIL, awaited before the body); False
        means do not send it.

        `ahead` (PIPELINING only) is called just before the final dot is written, and only
        then; the envelope it returns has its commands written with the dot (unless unfit for
        a command line); `ahead_written(commit)` tells whether they were.
        """
        self.dot_written = False
        begun, self._begun = self._begun, None
        early, self._begun_mark = self._begun_mark, None
        if begun is not None and begun is not commit:
            # Another envelope's commands are on the wire: this one cannot go on this link.
            commit.cancel()
            self._drop()
            return SendResult(
                Phase.CONNECT,
                None,
                "session busy with another envelope",
                dot_written=False,
                reusable=False,
            )
        link = self._link
        if link is None or not link.is_open:
            commit.cancel()
            return SendResult(Phase.CONNECT, None, "session not open", reusable=False)
        if smtputf8 and "SMTPUTF8" not in self.extensions:
            commit.cancel()
            return SendResult(
                Phase.LOCAL, 553, "5.6.7 recipient needs SMTPUTF8, which the server does not offer"
            )
        try:
            mail, rcpt_to = _envelope(mail_from, rcpt, smtputf8)
        except ValueError as e:
            commit.cancel()
            return SendResult(Phase.LOCAL, 553, f"5.1.3 {describe_error(e)}")
        if self.mark_at == MarkAt.DATA and early is None:
            early = commit.request()
        try:
            if self.pipelining:
                return await self._send_pipelined(
                    link, mail, rcpt_to, body, commit, early, begun is not None, ahead
                )
            return await self._send_stepwise(link, mail, rcpt_to, body, commit, early)
        except BaseException:
            # Cancelled (or a bug) mid-dialogue: the server's state is unknown, drop the link.
            commit.cancel()
            link.abort()
            raise

    async def _send_pipelined(
        self,
        link: _Link,
        mail: bytes,
        rcpt_to: bytes,
        body: bytes,
        commit: Commit,
        early: Awaitable[bool] | None,
        written: bool,
        ahead: Callable[[], Ahead | None] | None,
    ) -> SendResult:
        replies: list[Reply] = []
        lost: OSError | None = None
        try:
            rset = self._rset_due and not written
            if not written:
                link.write(self._commands(mail, rcpt_to), 4 if rset else 3)
            self._rset_due = False
            if rset:
                # Its code does not matter: a transaction still open shows in MAIL's reply.
                await link.read(self.timeouts.command)
            while len(replies) < 3:
                replies.append(await link.read(self.timeouts.command))
        except OSError as e:
            lost = e
        # Only a 354 leaves the server in DATA (a look-ahead's reading starts from not idle).
        self._idle = not (len(replies) == 3 and replies[2].code == 354)
        # The first refusal is the verdict (a DATA refused after a refused RCPT says nothing
        # more), even when the server hung up after it.
        for phase, reply, ok in zip(_PIPELINED_PHASES, replies, _PIPELINED_OK, strict=False):
            if reply.code not in ok:
                return await self._refused(phase, reply, commit, defer_rset=written)
        if lost is not None:
            commit.cancel()
            return await self._lost(_PIPELINED_PHASES[len(replies)], lost)
        return await self._data(link, body, commit, early, ahead)

    def _commands(self, mail: bytes, rcpt_to: bytes) -> bytes:
        prefix = b"RSET\r\n" if self._rset_due else b""
        return prefix + mail + rcpt_to + b"DATA\r\n"

    def _ahead_commands(self, fn: Callable[[], Ahead | None] | None) -> tuple[Ahead | None, bytes]:
        """The look-ahead and its commands; b"" when it cannot be pipelined (it goes alone)."""
        if fn is None or not self.pipelining or self._rset_due:
            return None, b""
        ahead = fn()
        if ahead is None:
            return None, b""
        if ahead.smtputf8 and "SMTPUTF8" not in self.extensions:
            return ahead, b""
        try:
            mail, rcpt_to = _envelope(ahead.mail_from, ahead.rcpt, ahead.smtputf8)
        except ValueError:
            return ahead, b""
        return ahead, mail + rcpt_to + b"DATA\r\n"

    async def _send_stepwise(
        self,
        link: _Link,
        mail: bytes,
        rcpt_to: bytes,
        body: bytes,
        commit: Commit,
        early: Awaitable[bool] | None,
    ) -> SendResult:
        command = self.timeouts.command
        phase = Phase.MAIL
        try:
            link.write(mail, 1)
            reply = await link.read(command)
            if reply.code != 250:
                return await self._refused(phase, reply, commit)
            phase = Phase.RCPT
            link.write(rcpt_to, 1)
            reply = await link.read(command)
            if reply.code not in (250, 251):
                return await self._refused(phase, reply, commit)
            phase = Phase.DATA
            link.write(b"DATA\r\n", 1)
            reply = await link.read(command)
        except OSError as e:
            commit.cancel()
            return await self._lost(phase, e)
        if reply.code != 354:
            return await self._refused(phase, reply, commit)
        self._idle = False
        return await self._data(link, body, commit, early)

    async def _data(
        self,
        link: _Link,
        body: bytes,
        commit: Commit,
        early: Awaitable[bool] | None,
        fn: Callable[[], Ahead | None] | None = None,
    ) -> SendResult:
        """After the 354: the body up to its final dot, the mark, then the dot."""
        payload = stuff_body(body)
        if early is not None:
            # mark_at "data": the mark before any of the body; body and dot in one write.
            failure = await self._await_mark(link, early, commit)
            if failure is not None:
                return failure
        else:
            try:
                link.write(payload, 0)
            except OSError as e:
                commit.cancel()
                return await self._lost(Phase.DATA, e)
            payload = b""
            failure = await self._await_mark(link, commit.request(), commit)
            if failure is not None:
                return failure
        ahead, commands = self._ahead_commands(fn)
        try:
            link.write(payload + _DOT + commands, 4 if commands else 1)
        except OSError as e:
            # The link was already gone: nothing of the dot reached the wire.
            commit.cancel()
            return await self._lost(Phase.DATA, e)
        self.dot_written = True
        commit.dot_written()
        if commands:
            assert ahead is not None
            self._begun = ahead.commit
            if self.mark_at == MarkAt.DATA:
                self._begun_mark = ahead.commit.request()
        try:
            reply = await link.read(self.timeouts.data)
        except OSError as e:
            await self.close()
            return SendResult(Phase.DOT, None, describe_error(e), dot_written=True, reusable=False)
        # With a look-ahead on the wire the server may be in DATA again: QUIT would be text.
        self._idle = self._begun is None
        self.sent += 1
        if reply.code == 421:
            self._drop()
        return SendResult(
            Phase.DOT, reply.code, reply.text, dot_written=True, reusable=reply.code != 421
        )

    async def _await_mark(
        self, link: _Link, mark: Awaitable[bool], commit: Commit
    ) -> SendResult | None:
        """None once the mark is durable; else the result, with the dot never written."""
        fut = asyncio.ensure_future(mark)
        try:
            granted = await link.hold(fut, self.timeouts.mark)
        except MarkTimeout:
            commit.cancel()
            self._drop()  # DATA is open on the server: only dropping it ends it without a dot
            return mark_timed_out(self.timeouts.mark)
        except LinkLost as e:
            commit.cancel()
            self._drop()
            return lost_before_dot(e.reason)
        if not granted:
            self._drop()
            return mark_refused()
        return None

    async def _refused(
        self, phase: Phase, reply: Reply, commit: Commit, defer_rset: bool = False
    ) -> SendResult:
        """A refusal before the body: keep the session when the server allows it.

        `defer_rset`: the RSET rides in front of the next envelope instead of its own trip.
        """
        commit.cancel()
        code = reply.code
        if code == 421 or not self._idle:
            # 421: the server is closing. Not idle: it said 354 although an earlier command
            # was refused; only a dropped connection ends DATA without a dot.
            self._drop()
        elif code < 500 or phase in (Phase.RCPT, Phase.MAIL):
            if defer_rset:
                self._rset_due = True
            else:
                await self._reset()
        return SendResult(phase, code, reply.text, reusable=code != 421 and self.is_open)

    async def _reset(self) -> None:
        link = self._link
        if link is None or not link.is_open:
            return
        try:
            link.write(b"RSET\r\n", 1)
            reply = await link.read(self.timeouts.command)
        except OSError:
            await self.close()
            return
        if reply.code != 250:
            await self.close()

    async def _lost(self, phase: Phase, error: BaseException) -> SendResult:
        await self.close()
        return SendResult(phase, None, describe_error(error), reusable=False)

    # -- closing -----------------------------------------------------------------------------

    def _drop(self) -> None:
        self._begun = None
        self._begun_mark = None
        link, self._link = self._link, None
        if link is not None:
            link.abort()

    async def close(self) -> None:
        """QUIT politely when possible, then drop the connection."""
        begun, self._begun = self._begun, None
        self._begun_mark = None
        link, self._link = self._link, None
        if link is None:
            return
        if not (link.is_open and self._idle and begun is None):
            link.abort()
            return
        try:
            link.write(b"QUIT\r\n", 1)
            await link.read(_QUIT_TIMEOUT)
        except OSError:
            pass
        finally:
            link.close()


def _envelope(mail_from: str, rcpt: str, smtputf8: bool) -> tuple[bytes, bytes]:
    """MAIL and RCPT command lines; ValueError for an address unfit for a command line."""
    for address in (mail_from, rcpt):
        if not _BAD_ADDRESS_CHARS.isdisjoint(address):
            raise ValueError(f"address {address[:100]!r} cannot go on an SMTP command line")
    if smtputf8:
        return (
            b"MAIL FROM:<" + mail_from.encode() + b"> SMTPUTF8\r\n",
            b"RCPT TO:<" + rcpt.encode() + b">\r\n",
        )
    return (
        b"MAIL FROM:<" + mail_from.encode("ascii") + b">\r\n",
        b"RCPT TO:<" + rcpt.encode("ascii") + b">\r\n",
    )
