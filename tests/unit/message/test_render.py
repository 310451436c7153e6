"""The hand-written renderer, checked against the stdlib parser."""

from __future__ import annotations

import email.policy
import re
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from dispatcher.message.render import (
    MAX_LINE,
    Body,
    Mailbox,
    assemble,
    encode_body,
    encoded_words,
    fold,
    longest_header_line,
    mailbox_header,
    unstructured,
)
from tests.corpus import rfc2047_mailbox

BARE_EOL = re.compile(rb"(?<!\r)\n|\r(?!\n)")


def parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def lines(data: bytes) -> list[bytes]:
    assert BARE_EOL.search(data) is None
    return data.split(b"\r\n")


def message(head: str, *bodies: Body) -> EmailMessage:
    data = assemble(head, list(bodies))
    assert max(len(line) for line in lines(data)) <= MAX_LINE
    return parse(data)


@pytest.mark.parametrize(
    "text",
    ["", "a", "Grüße 😀", "é" * 100, "x" * 45 + "é", "日本語のテキスト" * 20, "\u0301" * 30],
)
def test_encoded_words_are_short_and_decode_back(text: str) -> None:
    words = encoded_words(text)
    assert all(len(w) <= 75 and w.isascii() for w in words)
    msg = message(fold("Subject", words) + "From: a@b.example\r\n\r\n")
    assert msg["Subject"] == text


def test_fold_keeps_lines_short_and_unfolds_to_the_value() -> None:
    tokens = [f"token{i}" for i in range(100)]
    header = fold("X-Tokens", tokens)
    assert header.endswith("\r\n")
    assert all(len(line) <= 78 for line in header[:-2].split("\r\n"))
    assert header[:-2].replace("\r\n", "") == "X-Tokens: " + " ".join(tokens)


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        ("Hello world", True),
        ("a  b   c", True),
        (" ".join(["word"] * 300), True),
        ("=?utf-8?q?x?=", False),
        ("  padded  ", False),
        ("tab\there", False),
        ("Café", False),
        ("y" * 990, False),
        ("", True),
    ],
)
def test_unstructured_round_trip(value: str, raw: bool) -> None:
    header = unstructured("Subject", value)
    assert ("=?utf-8?b?" not in header) is raw
    msg = message(header + "\r\n")
    assert msg["Subject"] == value


@pytest.mark.parametrize(
    "value",
    [
        "a" + " " * 5000 + "b",  # issue 10, finding 7: once one 5,005-octet line
        "x" + " " * 996 + "y",
        " ".join(["w"] * 10) + " " * 1200 + "end",
        ("pad" + " " * 801) * 5,
    ],
)
def test_a_blank_run_never_makes_a_line_over_998_octets(value: str) -> None:
    header = unstructured("X-Note", value)
    assert max(len(line) for line in header.encode().split(b"\r\n")) <= MAX_LINE
    msg = message(header + "\r\n")
    assert msg["X-Note"] == value  # every blank kept


def test_longest_header_line_names_its_field() -> None:
    data = b"A: 1\r\nB: 22\r\n  333333\r\nC: 4\r\n\r\n" + b"x" * 5000 + b"\r\n"
    assert longest_header_line(data) == (8, b"B")


def test_unstructured_never_folds_into_blank_lines() -> None:
    header = unstructured("X-Spaces", ("word" + " " * 7) * 40 + "end")
    assert all(line.strip() for line in header[:-2].split("\r\n"))


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        ("", ""),
        ("Jane Doe", "Jane Doe"),
        ("Doe, Jane", "Doe, Jane"),
        ('x" <evil@evil.example>', 'x" <evil@evil.example>'),
        ("back\\slash", "back\\slash"),
        ("=?utf-8?b?ZXZpbA==?=", "=?utf-8?b?ZXZpbA==?="),
        ("Jürgen Müller", "Jürgen Müller"),
        ("Dr. Who", "Dr. Who"),
        ("ü" * 200, "ü" * 200),
    ],
)
def test_mailbox_header_round_trip(display: str, expected: str) -> None:
    mailbox = Mailbox(local="jane.doe+x", domain="example.org", display_name=display)
    header = mailbox_header("To", mailbox)
    assert header.isascii()
    msg = message(header + "\r\n")
    (address,) = msg["To"].addresses
    assert address.addr_spec == "jane.doe+x@example.org"
    assert not msg["To"].defects
    raw = header.partition(":")[2].strip()
    assert rfc2047_mailbox(raw) == (expected, "jane.doe+x@example.org")
    if len(expected.encode()) <= 45:  # one encoded-word: no RFC 2047 6.2 subtlety
        assert address.display_name == expected


@pytest.mark.parametrize(
    ("content", "encoding", "decoded"),
    [
        ("plain\n", "7bit", "plain\r\n"),
        ("no newline", "7bit", "no newline\r\n"),
        ("a\rb\nc\r\nd", "7bit", "a\r\nb\r\nc\r\nd\r\n"),
        ("a\n.\r\nb\r\n.\nc\r.\r", "7bit", "a\r\n.\r\nb\r\n.\r\nc\r\n.\r\n"),
        ("x" * 998, "7bit", "x" * 998 + "\r\n"),
        ("x" * 999, "quoted-printable", "x" * 999 + "\r\n"),
        ("nul\x00here", "quoted-printable", "nul\x00here\r\n"),
        ("Grüße\n", "quoted-printable", "Grüße\r\n"),
        ("trailing   \n.\n", "7bit", "trailing   \r\n.\r\n"),
    ],
)
def test_encode_body(content: str, encoding: str, decoded: str) -> None:
    body = encode_body(content, "plain")
    assert body.encoding == encoding
    assert body.data.endswith(b"\r\n")
    assert max(len(line) for line in lines(body.data)) <= MAX_LINE
    msg = message("From: a@b.example\r\n", body)
    assert msg.get_content_type() == "text/plain"
    assert msg["Content-Transfer-Encoding"] == encoding
    assert msg.get_content() == decoded


def test_quoted_printable_lines_stay_short() -> None:
    body = encode_body("é" * 5000 + "\n" + "x " * 3000, "html")
    assert body.encoding == "quoted-printable"
    assert max(len(line) for line in lines(body.data)) <= 76


def test_lone_surrogate_raises_unicode_error() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_body("bad \udc80", "plain")


def test_multipart_alternative() -> None:
    text = encode_body("Hello\n", "plain")
    html = encode_body("<p>Grüße</p>", "html")
    data = assemble("From: a@b.example\r\nTo: c@d.example\r\n", [text, html])
    msg = parse(data)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["MIME-Version"] == "1.0"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == "Hello"
    assert parts[1].get_content() == "<p>Grüße</p>"
    assert not msg.defects and not any(p.defects for p in parts)
    assert data.count(b"MIME-Version") == 1


def test_boundary_is_random_and_never_in_a_part() -> None:
    text = encode_body("Hello\n", "plain")
    first = assemble("", [text, text])
    second = assemble("", [text, text])
    b1 = re.search(rb'boundary="([^"]+)"', first)
    b2 = re.search(rb'boundary="([^"]+)"', second)
    assert b1 and b2 and b1.group(1) != b2.group(1)
    assert first.count(b"--" + b1.group(1)) == 3
