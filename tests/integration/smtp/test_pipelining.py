"""PipeliningSession against real SMTP servers on loopback, side by side with SmtpSession.

The behaviours of test_aiosmtplib_client.py run for both clients; the pipelining-only ones
(round trips counted at the server, DATA pipelined after a refused RCPT, no PIPELINING offered)
run for the new client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.tlscert import make_self_signed, server_context
from dispatcher.engine.outcomes import Classifier, Verdict
from dispatcher.smtp import CLIENTS, make_session
from dispatcher.smtp.session import Phase, SendResult, Session, SessionTimeouts
from tests.support.commit import FixedCommit, granted, refused
from tests.support.smtp_server import Behaviour, ServerFactory, Turn

BODY = b"From: a@acme.example\r\nTo: r@dest.example\r\nSubject: hi\r\n\r\nhello\r\n.leading dot\r\n"
# Lines that end the data if not stuffed, and lines that look stuffed already.
NASTY = b".\r\n..\r\n.x\r\nmid . dot\r\n...\r\n.\r\n"

both = pytest.mark.parametrize("client", CLIENTS)


def session(
    client: str,
    port: int,
    *,
    source: str = "127.0.0.2",
    command: float = 2.0,
    data: float = 5.0,
    starttls: bool = True,
) -> Session:
    return make_session(
        client,
        "127.0.0.1",
        port,
        source_ip=source,
        ehlo_name="mta1.platform.example",
        timeouts=SessionTimeouts(connect=2.0, command=command, data=data),
        starttls=starttls,
    )


async def send_one(
    client: str,
    port: int,
    mark: Callable[[], FixedCommit] = granted,
    body: bytes = BODY,
) -> SendResult:
    sess = session(client, port)
    failure = await sess.open()
    if failure is not None:
        return failure
    try:
        return await sess.send("b-tok@bounce.example", "r@dest.example", body, mark())
    finally:
        await sess.close()


def verdict(result: SendResult) -> Verdict:
    return Classifier().decide(result, 0, 0.0).verdict


# DATA refused when no MAIL or RCPT of the transaction was accepted, as real servers do
# (RFC 2920 3.1); the default test server would say 354 to it.
REAL_SERVER = Behaviour(data_needs_rcpt=True)


def refuse_first_rcpts(n: int) -> Callable[[Turn], str | None]:
    """RCPT refused for the first `n` tries."""
    return lambda t: "550 5.1.1 no such user" if len(t.server.commands("RCPT")) <= n else None


# -- the behaviours of test_smtp_session.py, for both clients ----------------------------------


@both
async def test_delivers_from_the_bound_source_ip_with_its_ehlo_name(
    smtp_server: ServerFactory, client: str
) -> None:
    s = await smtp_server()
    result = await send_one(client, s.port)
    assert result.code == 250 and result.dot_written and result.reusable
    assert verdict(result) == Verdict.DELIVERED
    assert s.peers == ["127.0.0.2"]
    assert s.ehlo_names == ["mta1.platform.example"]
    (rec,) = s.accepted()
    assert rec.data == BODY
    assert rec.mail_from == "b-tok@bounce.example" and rec.rcpts == ["r@dest.example"]


@both
@pytest.mark.parametrize(
    "body", [BODY, NASTY, b".", b"no final newline", b"a\r\n.", b"\r\n.\r\n"], ids=repr
)
async def test_dot_stuffing_round_trip(
    smtp_server: ServerFactory, client: str, body: bytes
) -> None:
    s = await smtp_server()
    result = await send_one(client, s.port, body=body)
    assert result.code == 250
    (rec,) = s.accepted()
    expected = body if body.endswith(b"\r\n") else body + b"\r\n"
    assert rec.data == expected


@both
async def test_421_greeting_is_deferred(smtp_server: ServerFactory, client: str) -> None:
    s = await smtp_server(greeting="421 4.3.2 too busy")
    result = await send_one(client, s.port)
    assert result.phase == Phase.GREETING and result.code == 421
    assert result.text == "4.3.2 too busy" and not result.reusable
    assert verdict(result) == Verdict.DEFERRED


@both
async def test_drop_after_data_command_is_deferred_not_ambiguous(
    smtp_server: ServerFactory, client: str
) -> None:
    s = await smtp_server(data="drop")
    result = await send_one(client, s.port)
    assert result.phase == Phase.DATA and result.code is None
    assert not result.dot_written and not result.reusable
    assert verdict(result) == Verdict.DEFERRED
    assert s.received == []


@both
async def test_no_reply_after_the_dot_is_ambiguous(smtp_server: ServerFactory, client: str) -> None:
    s = await smtp_server(dot="drop")
    result = await send_one(client, s.port)
    assert result.phase == Phase.DOT and result.dot_written and result.code is None
    assert verdict(result) == Verdict.AMBIGUOUS
    assert [r.ending for r in s.received] == ["unacked"]


@both
async def test_550_511_at_rcpt_bounces_and_the_session_carries_the_next_message(
    smtp_server: ServerFactory,
    client: str,
) -> None:
    s = await smtp_server(REAL_SERVER, rcpt=refuse_first_rcpts(1))
    sess = session(client, s.port)
    assert await sess.open() is None
    first = await sess.send("b@x.example", "gone@dest.example", BODY, granted())
    assert (first.phase, first.code, first.text) == (Phase.RCPT, 550, "5.1.1 no such user")
    assert not first.dot_written and first.reusable
    decision = Classifier().decide(first, 0, 0.0)
    assert decision.verdict == Verdict.BOUNCED and decision.rule.suppress
    second = await sess.send("b@x.example", "r@dest.example", BODY, granted())
    await sess.close()
    assert second.code == 250 and verdict(second) == Verdict.DELIVERED
    assert s.connections == 1
    (rec,) = s.received
    assert rec.rcpts == ["r@dest.example"] and rec.ending == "accepted"


@both
async def test_550_571_after_dot_is_the_senders_problem_not_a_bounce(
    smtp_server: ServerFactory, client: str
) -> None:
    s = await smtp_server(dot="550 5.7.1 rejected for policy reasons")
    result = await send_one(client, s.port)
    assert result.phase == Phase.DOT and result.code == 550 and result.reusable
    decision = Classifier(retry_schedule=(60.0,)).decide(result, 0, 1000.0)
    assert decision.verdict == Verdict.DEFERRED
    assert decision.rule.sender_problem and not decision.rule.suppress


@both
async def test_refused_mark_never_writes_the_dot(smtp_server: ServerFactory, client: str) -> None:
    s = await smtp_server()
    result = await send_one(client, s.port, refused)
    assert result.phase == Phase.MARK and not result.dot_written
    assert verdict(result) == Verdict.RELEASED
    assert s.received == []


@both
async def test_a_mark_refused_late_never_writes_the_dot(
    smtp_server: ServerFactory, client: str
) -> None:
    # The mark resolves after the server's replies are in (a slow group commit).
    s = await smtp_server()
    sess = session(client, s.port)
    assert await sess.open() is None
    commit = FixedCommit(pending=True)
    task = asyncio.create_task(sess.send("b@x.example", "r@dest.example", BODY, commit))
    # Let the dialogue run until only the mark is missing.
    await asyncio.wait_for(commit.requested.wait(), 5)
    assert not task.done()
    assert commit.future is not None
    commit.future.set_result(False)
    result = await task
    await sess.close()
    assert result.phase == Phase.MARK and not result.dot_written
    assert not sess.dot_written and commit.dots == 0
    assert s.received == []


@both
async def test_session_is_reused_for_several_messages(
    smtp_server: ServerFactory, client: str
) -> None:
    s = await smtp_server()
    sess = session(client, s.port)
    assert await sess.open() is None
    for _ in range(5):
        r = await sess.send("b@x.example", "r@dest.example", BODY, granted())
        assert r.code == 250
    assert sess.sent == 5
    await sess.close()
    assert not sess.is_open
    assert s.connections == 1 and len(s.accepted()) == 5


@both
async def test_connect_refused_is_a_deferral(smtp_server: ServerFactory, client: str) -> None:
    s = await smtp_server()
    port = s.port
    await s.stop()
    result = await send_one(client, port)
    assert result.phase == Phase.CONNECT and result.code is None and not result.reusable
    assert verdict(result) == Verdict.DEFERRED


@both
async def test_final_reply_is_awaited_longer_than_a_command(
    smtp_server: ServerFactory, client: str
) -> None:
    s = await smtp_server(dot="sleep 1.0 250 2.0.0 queued")
    sess = session(client, s.port, command=0.3, data=10.0)
    assert await sess.open() is None
    result = await sess.send("b@x.example", "r@dest.example", BODY, granted())
    await sess.close()
    assert result.code == 250 and verdict(result) == Verdict.DELIVERED


@both
async def test_a_silent_server_times_out_before_the_dot_as_a_deferral(
    smtp_server: ServerFactory, client: str
) -> None:
    s = await smtp_server(rcpt="silent")
    sess = session(client, s.port, command=0.3)
    assert await sess.open() is None
    result = await sess.send("b@x.example", "r@dest.example", BODY, granted())
    await sess.close()
    assert result.phase == Phase.RCPT and result.code is None and not result.reusable
    assert not result.dot_written and verdict(result) == Verdict.DEFERRED
    assert s.received == []


@both
async def test_smtputf8_needs_the_extension(smtp_server: ServerFactory, client: str) -> None:
    s = await smtp_server(Behaviour(smtputf8=False, eightbitmime=False))
    sess = session(client, s.port)
    assert await sess.open() is None
    result = await sess.send("b@x.example", "jörg@dest.example", BODY, granted(), smtputf8=True)
    assert (result.phase, result.code) == (Phase.LOCAL, 553)
    assert verdict(result) == Verdict.FAILED
    ok = await sess.send("b@x.example", "r@dest.example", BODY, granted())
    await sess.close()
    assert ok.code == 250


@both
async def test_smtputf8_recipient_is_sent_when_offered(
    smtp_server: ServerFactory, client: str
) -> None:
    s = await smtp_server()
    sess = session(client, s.port)
    assert await sess.open() is None
    result = await sess.send("b@x.example", "jörg@dest.example", BODY, granted(), smtputf8=True)
    await sess.close()
    assert result.code == 250
    (rec,) = s.accepted()
    assert rec.rcpts == ["jörg@dest.example"]


# Replies both clients must report identically (phase, code, text, dot_written, reusable).
SAME_RESULT_RULES: list[dict[str, str]] = [
    {"greeting": "554 5.7.1 no service here"},
    {"ehlo": "550 5.7.1 go away"},
    {"mail": "451 4.3.0 try later"},
    {"mail": "550-5.7.1 sender blocked\r\n550 5.7.1 see https://example.test/why"},
    {"mail": "421 4.3.2 closing"},
    {"rcpt": "452 4.2.2 mailbox full"},
    {"rcpt": "421 4.7.0 too many"},
    {"data": "451 4.3.0 later"},
    {"data": "554 5.7.1 no"},
    {"dot": "250-2.0.0 queued\r\n250 2.0.0 as ABC123"},
    {"dot": "452 4.3.1 insufficient storage"},
    {"dot": "421 4.3.2 shutting down"},
]


@pytest.mark.parametrize(
    "rules", SAME_RESULT_RULES, ids=lambda r: "-".join(f"{k}{v[:3]}" for k, v in r.items())
)
async def test_both_clients_report_the_same_result(
    smtp_server: ServerFactory, rules: dict[str, str]
) -> None:
    results = []
    for client in CLIENTS:
        s = await smtp_server(REAL_SERVER, **rules)
        results.append(await send_one(client, s.port))
    old, new = results
    assert new == old


# -- pipelining only ---------------------------------------------------------------------------


async def test_a_server_that_accepts_data_after_a_refused_rcpt_gets_no_message(
    smtp_server: ServerFactory,
) -> None:
    # A broken server says 354 though the only RCPT was refused: the client must not send the
    # message, and only a dropped connection ends DATA without a dot.
    s = await smtp_server(rcpt="550 5.1.1 no such user")
    sess = session("pipelining", s.port)
    assert await sess.open() is None
    result = await sess.send("b@x.example", "gone@dest.example", BODY, granted())
    await sess.close()
    assert (result.phase, result.code) == (Phase.RCPT, 550)
    assert not result.dot_written and not result.reusable
    assert verdict(result) == Verdict.BOUNCED
    assert s.received == []


async def test_an_unasked_reply_ends_the_session_instead_of_answering_the_next_command(
    smtp_server: ServerFactory,
) -> None:
    # "421 idle timeout" sent while the client is idle would pass for the reply to its MAIL.
    s = await smtp_server(dot="250 2.0.0 queued\r\n421 4.4.2 idle timeout")
    sess = session("pipelining", s.port)
    assert await sess.open() is None
    first = await sess.send("b@x.example", "r@dest.example", BODY, granted())
    assert first.code == 250
    for _ in range(100):
        if not sess.is_open:
            break
        await asyncio.sleep(0.01)
    assert not sess.is_open
    second = await sess.send("b@x.example", "r@dest.example", BODY, granted())
    await sess.close()
    assert (second.phase, second.code, second.reusable) == (Phase.CONNECT, None, False)
    assert len(s.received) == 1


async def test_without_pipelining_offered_commands_go_one_by_one(
    smtp_server: ServerFactory,
) -> None:
    s = await smtp_server(Behaviour(pipelining=False))
    sess = session("pipelining", s.port)
    assert await sess.open() is None
    before = s.flights
    for i in range(3):
        r = await sess.send("b@x.example", f"r{i}@dest.example", BODY, granted())
        assert r.code == 250
    sent_flights = s.flights - before
    await sess.close()
    assert sent_flights == 4 * 3  # MAIL, RCPT, DATA, body: one round trip each
    assert [m.data for m in s.accepted()] == [BODY] * 3


@both
async def test_round_trips_per_message_counted_at_the_server(
    smtp_server: ServerFactory, client: str
) -> None:
    s = await smtp_server()
    sess = session(client, s.port)
    assert await sess.open() is None
    before = s.flights
    for i in range(10):
        r = await sess.send("b@x.example", f"r{i}@dest.example", BODY, granted())
        assert r.code == 250
    per_message = (s.flights - before) / 10
    await sess.close()
    assert per_message == (2 if client == "pipelining" else 4)
    assert len(s.accepted()) == 10


# -- STARTTLS ----------------------------------------------------------------------------------


@both
async def test_starttls_when_offered(
    smtp_server: ServerFactory, client: str, tmp_path: Path
) -> None:
    tls = server_context(*make_self_signed(tmp_path))
    s = await smtp_server(Behaviour(starttls=tls))
    sess = session(client, s.port)
    assert await sess.open() is None
    assert sess.tls_active
    for _ in range(2):
        r = await sess.send("b@x.example", "r@dest.example", NASTY, granted())
        assert r.code == 250
    await sess.close()
    assert s.tls_sessions == 1
    assert [m.data for m in s.accepted()] == [NASTY, NASTY]


@both
async def test_starttls_not_wanted_stays_plaintext(
    smtp_server: ServerFactory, client: str, tmp_path: Path
) -> None:
    tls = server_context(*make_self_signed(tmp_path))
    s = await smtp_server(Behaviour(starttls=tls))
    sess = session(client, s.port, starttls=False)
    assert await sess.open() is None
    assert not sess.tls_active
    r = await sess.send("b@x.example", "r@dest.example", BODY, granted())
    await sess.close()
    assert r.code == 250 and s.tls_sessions == 0


@both
async def test_failed_tls_handshake_falls_back_to_plaintext(
    smtp_server: ServerFactory, client: str, tmp_path: Path
) -> None:
    tls = server_context(*make_self_signed(tmp_path))
    # Says 220 to STARTTLS, then answers the handshake with garbage and hangs up.
    broken = ["220 2.0.0 ready", b"this is not a TLS record\r\n", "drop"]
    s = await smtp_server(Behaviour(starttls=tls), starttls=broken)
    sess = session(client, s.port)
    assert await sess.open() is None
    assert not sess.tls_active
    r = await sess.send("b@x.example", "r@dest.example", BODY, granted())
    await sess.close()
    assert r.code == 250
    assert s.connections == 2 and s.tls_sessions == 0
    assert [m.data for m in s.accepted()] == [BODY]


# -- choosing the client -----------------------------------------------------------------------


def test_the_client_is_chosen_in_config_and_a_wrong_name_is_refused() -> None:
    import tomllib

    from dispatcher.config import ConfigError, parse_config

    repo = Path(__file__).resolve().parents[3]
    raw = tomllib.loads((repo / "config.toml").read_text())
    raw["smtp"].pop("client", None)
    assert parse_config(raw, repo).smtp.client == "pipelining"
    raw["smtp"]["client"] = "aiosmtplib"
    assert parse_config(raw, repo).smtp.client == "aiosmtplib"
    raw["smtp"]["client"] = "fast"
    with pytest.raises(ConfigError) as err:
        parse_config(raw, repo)
    assert err.value.key_path == "smtp.client"
    with pytest.raises(ValueError, match="unknown SMTP client"):
        session("fast", 25)
