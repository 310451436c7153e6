"""SmtpSession against real SMTP servers on loopback, and the verdicts the table gives."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dispatcher.engine.outcomes import Classifier, Verdict
from dispatcher.smtp.aiosmtplib_client import SmtpSession
from dispatcher.smtp.session import Phase, SendResult, SessionTimeouts
from tests.support.commit import FixedCommit, granted, refused
from tests.support.smtp_server import ServerFactory

BODY = b"From: a@acme.example\r\nTo: r@dest.example\r\nSubject: hi\r\n\r\nhello\r\n.leading dot\r\n"


def session(port: int, source: str = "127.0.0.2", data_timeout: float = 5.0) -> SmtpSession:
    return SmtpSession(
        "127.0.0.1",
        port,
        source_ip=source,
        ehlo_name="mta1.platform.example",
        timeouts=SessionTimeouts(connect=2.0, command=2.0, data=data_timeout),
    )


async def send_one(port: int, mark: Callable[[], FixedCommit] = granted) -> SendResult:
    sess = session(port)
    failure = await sess.open()
    if failure is not None:
        return failure
    try:
        return await sess.send("b-tok@bounce.example", "r@dest.example", BODY, mark())
    finally:
        await sess.close()


def verdict(result: SendResult) -> Verdict:
    return Classifier().decide(result, 0, 0.0).verdict


async def test_delivers_from_the_bound_source_ip_with_its_ehlo_name(
    smtp_server: ServerFactory,
) -> None:
    s = await smtp_server()
    result = await send_one(s.port)
    assert result.code == 250 and result.dot_written
    assert verdict(result) == Verdict.DELIVERED
    assert s.peers == ["127.0.0.2"]
    assert s.ehlo_names == ["mta1.platform.example"]
    (rec,) = s.accepted()
    # Dot-stuffing round trip: the line starting with "." arrives intact.
    assert rec.data == BODY


async def test_421_greeting_is_deferred(smtp_server: ServerFactory) -> None:
    s = await smtp_server(greeting="421 4.3.2 too busy")
    result = await send_one(s.port)
    assert result.phase == Phase.GREETING and result.code == 421
    assert verdict(result) == Verdict.DEFERRED


async def test_drop_after_data_command_is_deferred_not_ambiguous(
    smtp_server: ServerFactory,
) -> None:
    s = await smtp_server(data="drop")
    result = await send_one(s.port)
    assert not result.dot_written
    assert verdict(result) == Verdict.DEFERRED
    assert s.received == []


async def test_no_reply_after_the_dot_is_ambiguous(smtp_server: ServerFactory) -> None:
    s = await smtp_server(dot="drop")
    result = await send_one(s.port)
    assert result.dot_written and result.code is None
    assert verdict(result) == Verdict.AMBIGUOUS
    assert [r.ending for r in s.received] == ["unacked"]


async def test_550_511_at_rcpt_bounces_and_suppresses(smtp_server: ServerFactory) -> None:
    s = await smtp_server(rcpt="550 5.1.1 no such user")
    result = await send_one(s.port)
    decision = Classifier().decide(result, 0, 0.0)
    assert decision.verdict == Verdict.BOUNCED and decision.rule.suppress
    assert s.received == []


async def test_550_571_after_dot_is_the_senders_problem_not_a_bounce(
    smtp_server: ServerFactory,
) -> None:
    s = await smtp_server(dot="550 5.7.1 rejected for policy reasons")
    result = await send_one(s.port)
    decision = Classifier(retry_schedule=(60.0,)).decide(result, 0, 1000.0)
    assert decision.verdict == Verdict.DEFERRED
    assert decision.rule.sender_problem and not decision.rule.suppress
    assert decision.retry_at is not None and decision.retry_at > 1000.0


async def test_refused_mark_never_writes_the_dot(smtp_server: ServerFactory) -> None:
    s = await smtp_server()
    result = await send_one(s.port, refused)
    assert result.phase == Phase.MARK and not result.dot_written
    assert verdict(result) == Verdict.RELEASED
    assert s.received == []


async def test_session_is_reused_for_several_messages(smtp_server: ServerFactory) -> None:
    s = await smtp_server()
    sess = session(s.port)
    assert await sess.open() is None
    for _ in range(5):
        r = await sess.send("b@x.example", "r@dest.example", BODY, granted())
        assert r.code == 250
    await sess.close()
    assert s.connections == 1 and len(s.accepted()) == 5


async def test_connect_refused_is_a_deferral(smtp_server: ServerFactory) -> None:
    s = await smtp_server()
    port = s.port
    await s.stop()
    result = await send_one(port)
    assert result.phase == Phase.CONNECT and result.code is None
    assert verdict(result) == Verdict.DEFERRED


async def test_final_reply_is_awaited_longer_than_a_command(smtp_server: ServerFactory) -> None:
    # The dot's reply comes after the command timeout but within the data timeout.
    s = await smtp_server(dot="sleep 1.5 250 2.0.0 queued")
    sess = SmtpSession(
        "127.0.0.1",
        s.port,
        source_ip="127.0.0.2",
        ehlo_name="mta1.platform.example",
        timeouts=SessionTimeouts(connect=2.0, command=0.5, data=10.0),
    )
    assert await sess.open() is None
    result = await sess.send("b@x.example", "r@dest.example", BODY, granted())
    await sess.close()
    assert result.code == 250 and verdict(result) == Verdict.DELIVERED


@pytest.mark.parametrize(
    ("phase", "code", "text", "expected"),
    [
        (Phase.DOT, 250, "2.0.0 ok", Verdict.DELIVERED),
        (Phase.RCPT, 450, "4.2.1 mailbox busy", Verdict.DEFERRED),
        (Phase.RCPT, 550, "5.1.1 unknown", Verdict.BOUNCED),
        (Phase.RCPT, 550, "no such user", Verdict.BOUNCED),
        (Phase.MAIL, 550, "5.7.1 sender blocked", Verdict.DEFERRED),
        (Phase.GREETING, 554, "no service", Verdict.DEFERRED),
        (Phase.DOT, 552, "5.3.4 too big", Verdict.FAILED),
        (Phase.DOT, 550, "5.7.1 spam", Verdict.DEFERRED),
        (Phase.DOT, None, "connection lost", Verdict.AMBIGUOUS),
        (Phase.DATA, None, "connection lost", Verdict.DEFERRED),
        (Phase.LOCAL, 553, "5.6.7 smtputf8", Verdict.FAILED),
    ],
)
def test_classification_table(phase: str, code: int | None, text: str, expected: Verdict) -> None:
    dot = phase == Phase.DOT
    assert verdict(SendResult(phase, code, text, dot_written=dot)) == expected


def test_deferrals_end_after_max_attempts() -> None:
    c = Classifier(retry_schedule=(1.0,), max_attempts=3)
    r = SendResult(Phase.RCPT, 451, "4.3.0 later")
    assert c.decide(r, 0, 0.0).verdict == Verdict.DEFERRED
    assert c.decide(r, 2, 0.0).verdict == Verdict.FAILED
