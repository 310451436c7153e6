"""The shared SMTP test server (tests/support/smtp_server.py), driven byte by byte."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from bench.tlscert import make_self_signed, server_context
from tests.support.smtp_server import (
    Behaviour,
    Default,
    Drop,
    Endless,
    Quiet,
    Raw,
    ServerFactory,
    SmtpServer,
    Tarpit,
    Turn,
)

BODY = b"Subject: hi\r\n\r\nhello\r\n..leading dot\r\n"  # as on the wire: stuffed


class Client:
    """A raw SMTP client: writes exactly what it is given, reads whole replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: SmtpServer, source: str = "127.0.0.1") -> Client:
        reader, writer = await asyncio.open_connection(
            server.host, server.port, local_addr=(source, 0)
        )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> list[bytes]:
        """One reply's lines (multi-line replies whole), CRLF stripped; [] at EOF."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            if not line:
                return lines
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return lines

    async def eof(self) -> bool:
        """True once the server closed the connection (and said nothing more)."""
        return await asyncio.wait_for(self.reader.read(), 10) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    out: list[Client] = []
    yield out
    for c in out:
        await c.close()


async def connect(clients: list[Client], server: SmtpServer, source: str = "127.0.0.1") -> Client:
    c = await Client.connect(server, source)
    clients.append(c)
    return c


async def helo(c: Client) -> list[bytes]:
    assert (await c.reply())[0].startswith(b"220 ")
    await c.send(b"EHLO client.example\r\n")
    return await c.reply()


# -- normal service ----------------------------------------------------------------------------


async def test_records_peer_envelope_exact_bytes_and_flights(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server()
    c = await connect(clients, s, source="127.0.0.3")
    ehlo = await helo(c)
    assert ehlo == [b"250-smtp.test", b"250-PIPELINING", b"250-SMTPUTF8", b"250 8BITMIME"]
    # One pipelined group: three replies, one flight.
    await c.send(b"MAIL FROM:<b@x.example> SMTPUTF8\r\nRCPT TO:<r@d.example>\r\nDATA\r\n")
    assert [await c.reply() for _ in range(3)] == [
        [b"250 2.1.0 ok"],
        [b"250 2.1.5 ok"],
        [b"354 go ahead"],
    ]
    await c.send(BODY + b".\r\n")
    assert await c.reply() == [b"250 2.0.0 queued"]
    await c.send(b"QUIT\r\n")
    assert await c.reply() == [b"221 2.0.0 bye"]
    assert await c.eof()
    await s.wait_until(lambda: s.sessions[0].closed)
    (m,) = s.accepted()
    assert (m.peer, m.mail_from, m.rcpts) == ("127.0.0.3", "b@x.example", ["r@d.example"])
    assert m.data == b"Subject: hi\r\n\r\nhello\r\n.leading dot\r\n"
    assert m.raw == BODY + b".\r\n"
    assert m.reply == "250 2.0.0 queued" and m.connection == 0
    assert s.peers == ["127.0.0.3"] and s.ehlo_names == ["client.example"]
    assert s.commands("mail") == [b"MAIL FROM:<b@x.example> SMTPUTF8\r\n"]
    assert s.flights == 4  # EHLO, the group, the dot, QUIT (the greeting is none)


async def test_toggles_shape_the_ehlo_reply(
    smtp_server: ServerFactory, clients: list[Client], tmp_path: Path
) -> None:
    tls = server_context(*make_self_signed(tmp_path))
    s = await smtp_server(
        Behaviour(
            hostname="mx.test", pipelining=False, smtputf8=False, starttls=tls,
            extensions=("SIZE 1000",),
        )
    )  # fmt: skip
    c = await connect(clients, s)
    assert await helo(c) == [b"250-mx.test", b"250-8BITMIME", b"250-STARTTLS", b"250 SIZE 1000"]
    await c.send(b"HELO old.example\r\n")
    assert await c.reply() == [b"250 mx.test"]


async def test_starttls_discards_what_was_pipelined_behind_it(
    smtp_server: ServerFactory, clients: list[Client], tmp_path: Path
) -> None:
    s = await smtp_server(Behaviour(starttls=server_context(*make_self_signed(tmp_path))))
    c = await connect(clients, s)
    await helo(c)
    await c.send(b"STARTTLS\r\nRSET\r\n")  # the RSET would be injected plaintext
    assert await c.reply() == [b"220 2.0.0 ready"]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    await c.writer.start_tls(ctx)
    await c.send(b"EHLO again.example\r\n")
    after = await c.reply()
    assert b"250-STARTTLS" not in after and after[0] == b"250-smtp.test"
    assert s.sessions[0].tls and s.tls_sessions == 1
    assert s.sessions[0].discarded_at_starttls == b"RSET\r\n"
    assert s.commands("RSET") == []


async def test_starttls_with_aiosmtplib_delivers(
    smtp_server: ServerFactory, tmp_path: Path
) -> None:
    s = await smtp_server(Behaviour(starttls=server_context(*make_self_signed(tmp_path))))
    client = aiosmtplib.SMTP(
        hostname=s.host, port=s.port, start_tls=True, validate_certs=False, timeout=10
    )
    await client.connect()
    await client.sendmail("b@x.example", ["r@d.example"], b"Subject: tls\r\n\r\nbody\r\n")
    await client.quit()
    assert [m.data for m in s.accepted()] == [b"Subject: tls\r\n\r\nbody\r\n"]
    assert s.tls_sessions == 1


# -- replies scripted per phase ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "command"),
    [
        ("ehlo", b"EHLO c\r\n"),
        ("mail", b"MAIL FROM:<b@x.example>\r\n"),
        ("rcpt", b"RCPT TO:<r@d.example>\r\n"),
        ("data", b"DATA\r\n"),
        ("rset", b"RSET\r\n"),
        ("noop", b"NOOP\r\n"),
        ("other", b"VRFY someone\r\n"),
    ],
)
async def test_any_phase_can_answer_arbitrary_bytes(
    smtp_server: ServerFactory, clients: list[Client], phase: str, command: bytes
) -> None:
    garbage = b"250 \xff\xfe not utf-8 \x00\x07\x1b[2J\r\n"
    s = await smtp_server(**{phase: garbage})
    c = await connect(clients, s)
    await c.reply()
    await c.send(command)
    assert await asyncio.wait_for(c.reader.readexactly(len(garbage)), 10) == garbage


async def test_greeting_script_and_multiline_text(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server(greeting="220-first\r\n220-second\r\n220 ready", mail="sleep 0 452 full")
    c = await connect(clients, s)
    assert await c.reply() == [b"220-first", b"220-second", b"220 ready"]
    await c.send(b"MAIL FROM:<b@x.example>\r\n")
    assert await c.reply() == [b"452 full"]


async def test_an_endless_reply_goes_on_until_the_server_stops(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server(ehlo=Endless())
    c = await connect(clients, s)
    await c.reply()
    await c.send(b"EHLO c\r\n")
    got = b""
    while len(got) < 1 << 20:  # a megabyte of continuation lines, and no end in sight
        got += await asyncio.wait_for(c.reader.read(1 << 16), 10)
    lines = got.split(b"\r\n")[:-1]
    assert lines and all(line.startswith(b"250-x") for line in lines)
    await s.stop()
    await asyncio.wait_for(c.reader.read(), 10)  # the rest, then EOF
    assert c.reader.at_eof()


async def test_a_tarpit_sends_its_reply_a_byte_at_a_time(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server(greeting=Tarpit("220 slow", interval=0.05))
    c = await connect(clients, s)
    chunks = []
    while sum(map(len, chunks)) < len(b"220 slow\r\n"):
        chunks.append(await asyncio.wait_for(c.reader.read(100), 10))
    assert b"".join(chunks) == b"220 slow\r\n"
    assert len(chunks) >= 5  # one byte per write: reads cannot get it in one piece


async def test_a_delay_holds_the_reply_back(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server(noop="sleep 0.5 250 late")
    c = await connect(clients, s)
    await c.reply()
    await c.send(b"NOOP\r\n")
    reply = asyncio.create_task(c.reply())
    done, _ = await asyncio.wait([reply], timeout=0.05)
    assert not done  # not yet
    assert await reply == [b"250 late"]


async def test_replies_sent_ahead_of_their_commands(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server(ehlo=[Default(), "250 2.1.0 early"], mail=Quiet())
    c = await connect(clients, s)
    ehlo = await helo(c)
    assert ehlo[-1] == b"250 8BITMIME"
    # The MAIL reply is already here before MAIL is sent.
    assert await c.reply() == [b"250 2.1.0 early"]
    await c.send(b"MAIL FROM:<b@x.example>\r\nRCPT TO:<r@d.example>\r\n")
    assert await c.reply() == [b"250 2.1.5 ok"]  # MAIL itself got no second answer


async def test_a_421_mid_pipeline_closes_and_leaves_the_rest_unanswered(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server(rcpt=lambda t: "421 4.7.0 busy" if len(t.envelope.rcpts) > 1 else None)
    c = await connect(clients, s)
    await helo(c)
    await c.send(
        b"MAIL FROM:<b@x.example>\r\nRCPT TO:<a@d.example>\r\nRCPT TO:<b@d.example>\r\n"
        b"RCPT TO:<c@d.example>\r\nDATA\r\n"
    )
    assert [await c.reply() for _ in range(3)] == [
        [b"250 2.1.0 ok"],
        [b"250 2.1.5 ok"],
        [b"421 4.7.0 busy"],
    ]
    assert await c.eof()
    assert s.received == []


@pytest.mark.parametrize("phase", ["mail", "rcpt", "data", "body"])
async def test_a_drop_before_the_dot_leaves_no_message(
    smtp_server: ServerFactory, clients: list[Client], phase: str
) -> None:
    s = await smtp_server(**{phase: "drop"})
    c = await connect(clients, s)
    await helo(c)
    await c.send(b"MAIL FROM:<b@x.example>\r\nRCPT TO:<r@d.example>\r\nDATA\r\n")
    await c.send(BODY)
    await c.send(b".\r\n")
    while await c.reply():
        pass  # replies up to the drop, then EOF
    await s.wait_until(lambda: s.sessions[0].closed)
    assert s.received == []


@pytest.mark.parametrize(
    ("dot", "ending", "answer"),
    [
        ("drop", "unacked", []),
        (Drop(abort=True), "unacked", []),
        (["250 2.0.0 ok", "drop"], "accepted", [b"250 2.0.0 ok"]),
        ("451 4.3.0 later", "refused", [b"451 4.3.0 later"]),
        (b"\xff garbage\r\n", "unacked", [b"\xff garbage"]),
    ],
)
async def test_what_happens_after_the_dot_is_recorded_before_it_happens(
    smtp_server: ServerFactory, clients: list[Client], dot: object, ending: str, answer: list[bytes]
) -> None:
    seen: list[str] = []
    s = await smtp_server(on_message=lambda m: seen.append(m.ending), dot=dot)  # type: ignore[arg-type]
    c = await connect(clients, s)
    await helo(c)
    await c.send(b"MAIL FROM:<b@x.example>\r\nRCPT TO:<r@d.example>\r\nDATA\r\n")
    assert len([await c.reply() for _ in range(3)]) == 3
    await c.send(BODY + b".\r\n")
    try:
        got = await c.reply()
    except ConnectionResetError:
        got = []
    assert got == answer
    assert seen == [ending]
    assert [m.ending for m in s.received] == [ending]


async def test_accept_then_never_answer_the_dot(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server(dot="silent")
    c = await connect(clients, s)
    await helo(c)
    await c.send(b"MAIL FROM:<b@x.example>\r\nRCPT TO:<r@d.example>\r\nDATA\r\n")
    assert len([await c.reply() for _ in range(3)]) == 3
    await c.send(BODY + b".\r\n")
    await s.wait_until(lambda: len(s.received) == 1)
    reply = asyncio.create_task(c.reader.read(1))
    done, _ = await asyncio.wait([reply], timeout=0.1)
    assert not done
    reply.cancel()
    assert [m.ending for m in s.received] == ["unacked"]
    await c.close()  # the client hangs up: the silent connection ends too
    await s.wait_until(lambda: s.sessions[0].closed)


async def test_callables_see_the_turn_and_keep_notes(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    turns: list[tuple[str, int, int]] = []

    def watch(t: Turn) -> None:
        t.envelope.notes["seen"] = t.phase
        turns.append((t.phase, t.connection.index, t.messages))

    s = await smtp_server(mail=watch, dot=watch)
    c = await connect(clients, s)
    await helo(c)
    for _ in range(2):
        await c.send(b"MAIL FROM:<b@x.example>\r\nRCPT TO:<r@d.example>\r\nDATA\r\n")
        assert len([await c.reply() for _ in range(3)]) == 3
        await c.send(BODY + b".\r\n")
        assert await c.reply() == [b"250 2.0.0 queued"]
    assert turns == [("mail", 0, 0), ("dot", 0, 1), ("mail", 0, 1), ("dot", 0, 2)]
    assert [m.notes for m in s.received] == [{"seen": "dot"}] * 2


async def test_a_real_server_refuses_data_without_an_accepted_recipient(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server(Behaviour(data_needs_rcpt=True), rcpt="550 5.1.1 no such user")
    c = await connect(clients, s)
    await helo(c)
    await c.send(b"MAIL FROM:<b@x.example>\r\nRCPT TO:<r@d.example>\r\nDATA\r\n")
    assert [await c.reply() for _ in range(3)][2] == [b"554 5.5.1 no valid recipients"]
    broken = await smtp_server(rcpt="550 5.1.1 no such user")
    b = await connect(clients, broken)
    await helo(b)
    await b.send(b"MAIL FROM:<b@x.example>\r\nRCPT TO:<r@d.example>\r\nDATA\r\n")
    assert [await b.reply() for _ in range(3)][2] == [b"354 go ahead"]


async def test_a_line_over_the_limit_is_refused_and_the_connection_closed(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server(Behaviour(max_line=1000))
    c = await connect(clients, s)
    await c.reply()
    await c.send(b"NOOP " + b"x" * 5000)
    assert await c.reply() == [b"500 5.5.6 line too long"]
    assert await c.eof()


def test_an_unknown_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown phases"):
        SmtpServer(dott="drop")


async def test_raw_bytes_and_steps_compose(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server(noop=[Raw(b"250-a\r\n"), "sleep 0 250-b", Raw(b"250 c\r\n")])
    c = await connect(clients, s)
    await c.reply()
    await c.send(b"NOOP\r\n")
    assert await c.reply() == [b"250-a", b"250-b", b"250 c"]


async def test_an_early_reply_in_the_body_closes_and_in_data_shows_what_arrived(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server(body="552 5.3.4 too big")
    c = await connect(clients, s)
    await helo(c)
    await c.send(b"MAIL FROM:<b@x.example>\r\nRCPT TO:<r@d.example>\r\nDATA\r\n")
    assert len([await c.reply() for _ in range(3)]) == 3
    await c.send(b"Subject: hi\r\n")
    assert await c.reply() == [b"552 5.3.4 too big"]
    assert await c.eof()
    assert s.in_data == b"Subject: hi\r\n" and s.received == []


async def test_in_data_grows_as_the_message_arrives(
    smtp_server: ServerFactory, clients: list[Client]
) -> None:
    s = await smtp_server()
    c = await connect(clients, s)
    await helo(c)
    await c.send(b"MAIL FROM:<b@x.example>\r\nRCPT TO:<r@d.example>\r\nDATA\r\n")
    assert len([await c.reply() for _ in range(3)]) == 3
    await c.send(BODY)
    await s.wait_until(lambda: s.in_data == BODY, within=5)
    assert s.received == []
    await c.send(b".\r\n")
    assert await c.reply() == [b"250 2.0.0 queued"]
    assert s.received[0].raw == BODY + b".\r\n"


async def test_a_failing_callable_ends_its_connection_and_stop_raises_it() -> None:
    def broken(t: Turn) -> None:
        raise LookupError("a bug in the test's script")

    s = await SmtpServer(mail=broken).start()
    c = await Client.connect(s)
    await helo(c)
    await c.send(b"MAIL FROM:<b@x.example>\r\n")
    assert await c.eof()
    await c.close()
    with pytest.raises(LookupError, match="a bug"):
        await s.stop()
