"""The bench sink speaks correct SMTP, and its latency mode delays per flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from bench.message import render
from bench.sink import Sink, SinkOptions, start_sink, unstuff
from bench.tlscert import make_self_signed, server_context


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = await start_sink(SinkOptions(keep=True))
    yield s
    await s.close()


async def _reply(reader: asyncio.StreamReader) -> tuple[int, list[str]]:
    """One (possibly multi-line) reply: its code and its lines."""
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(reader.readline(), 10)
        assert raw.endswith(b"\r\n"), raw
        line = raw.decode()
        lines.append(line[4:].rstrip())
        if line[3] == " ":
            return int(line[:3]), lines


async def test_message_arrives_intact_with_dots(sink: Sink) -> None:
    m = render(7, "t")
    # Lines starting with a dot are stuffed by the client and must come out unchanged.
    data = m.data + b".hidden line\r\n..two dots\r\n.\tdot tab\r\nlast line\r\n"
    await aiosmtplib.send(
        data, sender=m.sender, recipients=[m.rcpt], hostname="127.0.0.1", port=sink.port
    )
    st = sink.stats
    assert st.messages == 1
    assert st.kept[0].data == data
    assert st.kept[0].sender == m.sender
    assert st.kept[0].rcpts == [m.rcpt]
    assert st.arrivals[0].message_id == m.message_id
    assert st.arrivals[0].rcpt == m.rcpt


def test_unstuff() -> None:
    assert unstuff(b"..a\r\nb\r\n...c\r\n") == b".a\r\nb\r\n..c\r\n"


async def test_pipelined_commands_answered_in_order(sink: Sink) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
    assert (await _reply(reader))[0] == 220
    writer.write(b"EHLO client.example\r\n")
    code, ehlo = await _reply(reader)
    assert code == 250 and "PIPELINING" in ehlo
    writer.write(
        b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\n"
        b"NOOP\r\nDATA\r\n"
    )
    codes = [(await _reply(reader))[0] for _ in range(5)]
    assert codes == [250, 250, 250, 250, 354]
    writer.write(b"Subject: s\r\n\r\n..x\r\n.\r\nMAIL FROM:<a@x.example>\r\nRSET\r\nQUIT\r\n")
    codes = [(await _reply(reader))[0] for _ in range(4)]
    assert codes == [250, 250, 250, 221]
    assert await reader.read() == b""  # closed after QUIT
    writer.close()
    assert sink.stats.kept[0].data == b"Subject: s\r\n\r\n.x\r\n"
    assert sink.stats.kept[0].rcpts == ["b@y.example", "c@y.example"]


async def test_empty_message_and_data_without_recipient(sink: Sink) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
    await _reply(reader)
    writer.write(b"HELO c\r\nMAIL FROM:<a@x.example>\r\nDATA\r\n")
    assert [(await _reply(reader))[0] for _ in range(3)] == [250, 250, 503]
    writer.write(b"RCPT TO:<b@y.example>\r\nDATA\r\n")
    assert [(await _reply(reader))[0] for _ in range(2)] == [250, 354]
    writer.write(b".\r\n")
    assert (await _reply(reader))[0] == 250
    writer.close()
    assert sink.stats.kept[0].data == b""


async def test_message_split_across_reads(sink: Sink) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
    await _reply(reader)
    writer.write(b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n")
    for _ in range(4):
        await _reply(reader)
    # The terminator arrives split over several writes: CRLF | . | CRLF.
    for part in (b"Subject: s\r\n\r\nbody", b"\r\n", b".", b"\r", b"\n"):
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.01)
    assert (await _reply(reader))[0] == 250
    writer.close()
    assert sink.stats.kept[0].data == b"Subject: s\r\n\r\nbody\r\n"


async def test_starttls(tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path)
    s = await start_sink(SinkOptions(keep=True, tls=server_context(cert, key)))
    try:
        m = render(1, "tls")
        await aiosmtplib.send(
            m.data,
            sender=m.sender,
            recipients=[m.rcpt],
            hostname="127.0.0.1",
            port=s.port,
            start_tls=True,
            validate_certs=False,
        )
        assert s.stats.tls_sessions == 1
        assert s.stats.kept[0].data == m.data
    finally:
        await s.close()


async def test_latency_sink_delays_once_per_flight() -> None:
    s = await start_sink(SinkOptions(delay=0.02))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        await _reply(reader)
        writer.write(b"EHLO c\r\n")
        await _reply(reader)
        base = s.stats.flights
        # A pipelined burst of five commands is one flight...
        writer.write(
            b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\n"
            b"RCPT TO:<d@y.example>\r\nRSET\r\n"
        )
        assert [(await _reply(reader))[0] for _ in range(5)] == [250] * 5
        assert s.stats.flights - base == 1
        # ...the same five commands one by one are five.
        base = s.stats.flights
        for cmd in (b"MAIL FROM:<a@x.example>", b"RCPT TO:<b@y.example>", b"NOOP", b"NOOP"):
            writer.write(cmd + b"\r\n")
            assert (await _reply(reader))[0] == 250
        writer.write(b"RSET\r\n")
        assert (await _reply(reader))[0] == 250
        assert s.stats.flights - base == 5
        writer.close()
    finally:
        await s.close()


async def test_latency_sink_counts_aiosmtplib_round_trips() -> None:
    s = await start_sink(SinkOptions(delay=0.005))
    try:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=s.port, start_tls=False)
        await client.connect()
        await client.ehlo()
        after_connect = s.stats.flights
        m = render(1, "rt")
        for _ in range(3):
            await client.sendmail(m.sender, [m.rcpt], m.data)
        # aiosmtplib does not pipeline: MAIL, RCPT, DATA and the final dot, one flight each.
        assert s.stats.flights - after_connect == 3 * 4
        await client.quit()
    finally:
        await s.close()
