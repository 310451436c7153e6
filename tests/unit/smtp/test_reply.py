"""The shared reply parser and text cleaner, fed a hostile server's bytes (issue 10: 1, 2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.smtp.reply import (
    MAX_REPLY_BYTES,
    MAX_REPLY_LINES,
    MalformedReply,
    Reply,
    ReplyError,
    ReplyParser,
    ReplyTooLong,
    clean_bytes,
    clean_text,
    escape_for_log,
)

_UNSAFE = {*range(0, 10), *range(11, 32), *range(0x7F, 0xA0), 0x2028, 0x2029}
_UNSAFE |= {*range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def _safe(text: str) -> bool:
    """Valid Unicode with no control, bidi override or line separator but LF."""
    text.encode("utf-8")  # raises on surrogates
    return not any(ord(c) in _UNSAFE for c in text)


def test_replies_split_across_reads_and_multiline_joined() -> None:
    p = ReplyParser()
    assert p.feed(b"250-first\r\n25") == []
    assert p.feed(b"0-second\r\n250 third\r\n220 x\r\n") == [
        Reply(250, "first\nsecond\nthird"),
        Reply(220, "x"),
    ]
    assert p.held == 0


def test_invalid_utf8_and_control_bytes_are_replaced_or_removed() -> None:
    (reply,) = ReplyParser().feed(b"550 5.1.1 \xff\xfe user\x1b[31m\x00 gone\x07\r\n")
    assert reply.code == 550
    assert reply.text == "5.1.1 \ufffd\ufffd user[31m gone"
    assert _safe(reply.text)


def test_surrogate_escaped_text_from_aiosmtplib_is_cleaned() -> None:
    raw = b"5.1.1 \xff\xfe caf\xc3\xa9 \x1b]0;title\x07"
    text = raw.decode("utf-8", "surrogateescape")
    assert clean_text(text) == "5.1.1 \ufffd\ufffd café ]0;title"
    assert clean_text("lone \ud800") == "lone \ufffd\ufffd\ufffd"


def test_endless_multiline_reply_is_cut_at_the_line_cap() -> None:
    p = ReplyParser()
    with pytest.raises(ReplyTooLong, match="100 lines"):
        for _ in range(MAX_REPLY_LINES + 1):
            p.feed(b"250-x\r\n")
    assert p.held == 0


def test_endless_bytes_are_cut_at_the_byte_cap() -> None:
    p = ReplyParser()
    with pytest.raises(ReplyTooLong, match="bytes"):
        for _ in range(MAX_REPLY_BYTES // 1000 + 2):
            p.feed(b"2" * 1000)  # one line that never ends
    assert p.held == 0


def test_a_line_without_a_code_is_malformed() -> None:
    with pytest.raises(MalformedReply):
        ReplyParser().feed(b"hello there\r\n")
    with pytest.raises(MalformedReply):
        ReplyParser().feed(b"2500 four digits\r\n")


def test_log_escape_leaves_one_line_and_no_terminal_escapes() -> None:
    text = "ok\nFAKE 2026 INFO delivered\r\x1b[2J"
    out = escape_for_log(text)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out
    assert out.isascii() and out.isprintable()


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=3000), max_size=40))
def test_arbitrary_bytes_raise_only_reply_errors_and_stay_bounded(chunks: list[bytes]) -> None:
    p = ReplyParser()
    for chunk in chunks:
        try:
            replies = p.feed(chunk)
        except ReplyError:
            assert p.held == 0
            return
        assert p.held <= MAX_REPLY_BYTES
        for r in replies:
            assert 0 <= r.code <= 999
            assert r.text.count("\n") < MAX_REPLY_LINES
            assert len(r.text.encode("utf-8")) <= MAX_REPLY_BYTES * 3
            assert _safe(r.text)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"250", b"421", b"550", b"220", b"354"]),
            st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")), max_size=5),
        ),
        max_size=10,
    ),
    st.integers(min_value=1, max_value=64),
)
def test_well_formed_replies_survive_any_chunking(
    replies: list[tuple[bytes, list[bytes]]], step: int
) -> None:
    wire = b""
    want: list[int] = []
    for code, lines in replies:
        lines = lines or [b""]
        for i, line in enumerate(lines):
            wire += code + (b" " if i == len(lines) - 1 else b"-") + line + b"\r\n"
        want.append(int(code))
    p = ReplyParser()
    got: list[Reply] = []
    for i in range(0, len(wire), step):
        got += p.feed(wire[i : i + step])
    assert [r.code for r in got] == want
    assert all(_safe(r.text) for r in got)


@given(st.binary(max_size=500))
def test_clean_bytes_is_always_printable_but_line_breaks(raw: bytes) -> None:
    text = clean_bytes(raw)
    text.encode("utf-8")
    assert not any(ord(c) < 32 and c != "\n" for c in text)
    assert "\x7f" not in text and "\x1b" not in text
