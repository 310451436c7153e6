"""The narrow committing window, for both clients, against a real server on loopback.

After the server's 354 the whole body goes out, its last CRLF included, and only the final dot
is held back until the mark is durable; the dot is written then, and only then is
`dot_written` true. While the mark is awaited a lost link or an early reply means the dot was
never written (deferred, never ambiguous); a mark that does not come in time aborts the
connection and releases the message. TCP_NODELAY is on, so the three bytes of the dot never
wait for a delayed ACK.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from dispatcher.engine.outcomes import Classifier, Verdict
from dispatcher.smtp import CLIENTS, make_session
from dispatcher.smtp.aiosmtplib_client import SmtpSession
from dispatcher.smtp.pipelining import PipeliningSession, stuff_body
from dispatcher.smtp.session import Ahead, Phase, SendResult, Session, SessionTimeouts
from tests.support.commit import FixedCommit
from tests.support.smtp_server import ServerFactory

BODY = b"From: a@acme.example\r\nTo: r@dest.example\r\nSubject: hi\r\n\r\nhello\r\n.dot line\r\n"
both = pytest.mark.parametrize("client", CLIENTS)


def verdict(result: SendResult) -> Verdict:
    return Classifier().decide(result, 0, 0.0).verdict


async def opened(client: str, port: int, mark: float = 5.0) -> Session:
    sess = make_session(
        client,
        "127.0.0.1",
        port,
        source_ip="127.0.0.2",
        ehlo_name="mta1.platform.example",
        timeouts=SessionTimeouts(connect=2.0, command=2.0, data=5.0, mark=mark),
        starttls=False,
    )
    assert await sess.open() is None
    return sess


def nodelay(sess: Session) -> int:
    if isinstance(sess, PipeliningSession):
        assert sess._link is not None and sess._link.transport is not None
        transport = sess._link.transport
    else:
        assert isinstance(sess, SmtpSession) and sess._client is not None
        assert sess._client.transport is not None
        transport = sess._client.transport
    sock = transport.get_extra_info("socket")
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@both
async def test_tcp_nodelay_is_on(smtp_server: ServerFactory, client: str) -> None:
    s = await smtp_server()
    sess = await opened(client, s.port)
    assert nodelay(sess) == 1
    await sess.close()


@both
async def test_the_whole_body_is_written_before_the_mark_and_the_dot_only_after(
    smtp_server: ServerFactory,
    client: str,
) -> None:
    s = await smtp_server()
    sess = await opened(client, s.port)
    commit = FixedCommit(pending=True)
    task = asyncio.create_task(sess.send("b@x.example", "r@dest.example", BODY, commit))
    await asyncio.wait_for(commit.requested.wait(), 5)
    # Everything up to and including the last CRLF is at the server; the dot is not.
    await s.wait_until(lambda: s.in_data == stuff_body(BODY), within=5)
    await asyncio.sleep(0.05)
    assert s.received == [] and not task.done()
    assert not sess.dot_written and commit.dots == 0
    assert commit.future is not None
    commit.future.set_result(True)
    result = await task
    assert result.code == 250 and result.dot_written and sess.dot_written
    assert commit.dots == 1 and commit.requests == 1
    assert [r.ending for r in s.received] == ["accepted"]
    await sess.close()


@both
@pytest.mark.parametrize("action", ["drop", "421 4.3.2 closing now", "552 5.3.4 too big"])
async def test_a_lost_link_or_an_early_reply_while_the_mark_is_awaited_is_not_ambiguous(
    smtp_server: ServerFactory, client: str, action: str
) -> None:
    s = await smtp_server(body=action)
    sess = await opened(client, s.port)
    commit = FixedCommit(pending=True)
    task = asyncio.create_task(sess.send("b@x.example", "r@dest.example", BODY, commit))
    result = await asyncio.wait_for(task, 5)
    assert result.phase == Phase.DATA and not result.dot_written and not result.reusable
    assert verdict(result) == Verdict.DEFERRED
    assert commit.dots == 0 and not sess.dot_written
    # The mark was given up: a writer that had not yet written it skips it.
    assert commit.future is None or commit.future.cancelled()
    assert s.received == []
    await sess.close()


@both
async def test_a_mark_that_does_not_come_in_time_aborts_and_releases(
    smtp_server: ServerFactory, client: str
) -> None:
    s = await smtp_server()
    sess = await opened(client, s.port, mark=0.2)
    commit = FixedCommit(pending=True)
    result = await asyncio.wait_for(sess.send("b@x.example", "r@dest.example", BODY, commit), 5)
    assert result.phase == Phase.MARK and not result.dot_written
    assert verdict(result) == Verdict.RELEASED
    assert commit.future is not None and commit.future.cancelled()
    assert not sess.is_open
    await asyncio.sleep(0.05)
    assert s.received == []  # the server never saw a dot


class LoggedCommit(FixedCommit):
    """Appends (name, event) to a shared log, so a test sees the order across messages."""

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        super().__init__(True)
        self.name, self.log = name, log

    def request(self) -> asyncio.Future[bool]:
        self.log.append((self.name, "mark"))
        return super().request()

    def dot_written(self) -> None:
        self.log.append((self.name, "dot"))
        super().dot_written()


async def test_with_send_ahead_each_mark_is_asked_for_after_its_own_body(
    smtp_server: ServerFactory,
) -> None:
    s = await smtp_server()
    sess = await opened("pipelining", s.port)
    log: list[tuple[str, str]] = []
    commits = [LoggedCommit(str(i), log) for i in range(4)]
    for i, c in enumerate(commits):
        ahead = None
        if i + 1 < len(commits):
            nxt = Ahead("b@x.example", f"r{i + 1}@dest.example", commits[i + 1])
            ahead = lambda nxt=nxt: nxt  # noqa: E731
        result = await sess.send("b@x.example", f"r{i}@dest.example", BODY, c, ahead=ahead)
        assert result.code == 250
        if i + 1 < len(commits):
            # Its commands rode with this dot; its mark is not yet asked for.
            assert sess.ahead_written(commits[i + 1])
            assert commits[i + 1].requests == 0
    await sess.close()
    assert log == [(str(i), e) for i in range(4) for e in ("mark", "dot")]
    assert [r.rcpts for r in s.accepted()] == [[f"r{i}@dest.example"] for i in range(4)]
    assert s.connections == 1
