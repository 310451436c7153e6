"""RFC 5322 / MIME rendering of already-validated values, written by hand for speed.

It runs at enqueue for every message of a broadcast, so it avoids `email.message` and its
policy machinery (measured on a 4 KB text message: about 15 us here against 1.3 ms for
`EmailMessage.set_content` + `as_bytes`); the tests check the output with the stdlib parser.

Guarantees, given values `dispatcher.message.intake` has validated (no CR, LF or NUL in headers):
CRLF line ends only; no line over 998 octets (headers folded at spaces, long or odd words
become RFC 2047 encoded-words; bodies with long lines or non-ASCII become quoted-printable);
every body ends with a line break, so no "\\r\\n.\\r\\n" variant can arise from bare CR or LF.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_LINE = 998
_FOLD_AT = 78  # the RFC 5322 "SHOULD" line length
_WORD_BYTES = 45  # UTF-8 octets per encoded-word: base64 -> 60 chars, word <= 75 chars
_QP_LINE = 76  # RFC 2045 6.7
_RAW_WORD_MAX = 800  # longer unbroken words are encoded so folding can split them
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One validated mailbox. `domain` is the lower-case A-label form."""

    local: str
    domain: str
    display_name: str = ""

    @property
    def address(self) -> str:
        """The addr-spec (envelope form): `local@domain`."""
        return f"{self.local}@{self.domain}"


def encoded_words(text: str) -> list[str]:
    """`text` as RFC 2047 B encoded-words of at most 75 characters, split between characters."""
    data = text.encode("utf-8")
    words = []
    start = 0
    n = len(data)
    while start < n:
        end = min(start + _WORD_BYTES, n)
        # Never cut a UTF-8 sequence: back up to the start of a character.
        while end < n and (data[end] & 0xC0) == 0x80:
            end -= 1
        words.append("=?utf-8?b?" + base64.b64encode(data[start:end]).decode("ascii") + "?=")
        start = end
    return words or ["=?utf-8?b??="]


def _needs_encoding(value: str) -> bool:
    """True unless `value` can go out as it is: printable ASCII, no leading or trailing
    space (parsers strip it), nothing that reads as an encoded-word, no unfoldable word."""
    if not (value.isascii() and value.isprintable()):
        return True
    if "=?" in value or value != value.strip(" "):
        return True
    return len(value) > _RAW_WORD_MAX and any(len(w) > _RAW_WORD_MAX for w in value.split(" "))


def fold(name: str, tokens: Iterable[str]) -> str:
    """`Name: tok tok ...` + CRLF, folded before a token when the line would pass 78
    characters. Each token must be non-empty and shorter than MAX_LINE - len(name) - 3."""
    lines: list[str] = []
    line = name + ":"
    for tok in tokens:
        if len(line) + 1 + len(tok) > _FOLD_AT and len(line) > len(name) + 1:
            lines.append(line)
            line = " " + tok
        else:
            line = line + " " + tok
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def unstructured(name: str, value: str) -> str:
    """An unstructured header field (Subject, extra fields): raw when safe, else encoded."""
    if _needs_encoding(value):
        return fold(name, encoded_words(value))
    if len(name) + 2 + len(value) <= _FOLD_AT:
        return f"{name}: {value}\r\n"
    # Fold only at single spaces between words: unfolding then restores the exact value.
    tokens: list[str] = []
    for word in value.split(" "):
        if tokens and (not word or not tokens[-1]):
            tokens[-1] = tokens[-1] + " " + word
        else:
            tokens.append(word)
    if max(map(len, tokens)) > _RAW_WORD_MAX:
        # A run of blanks glued words into one token no fold can split: encoded-words keep
        # every blank (inside the encoding) and fold anywhere.
        return fold(name, encoded_words(value))
    return fold(name, tokens)


def longest_header_line(message: bytes) -> tuple[int, bytes]:
    """(octets, field name) of the longest line of `message`'s header block."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[:end]
    longest, name = 0, b""
    current = b""
    for line in head.split(b"\r\n"):
        if line[:1] not in (b" ", b"\t"):
            current = line.partition(b":")[0]
        if len(line) > longest:
            longest, name = len(line), current
    return longest, name


def _display_tokens(name: str) -> list[str]:
    if _ATOM_PHRASE.fullmatch(name) and "=?" not in name:
        return name.split(" ")
    if name.isascii() and name.isprintable() and "=?" not in name and len(name) < _RAW_WORD_MAX:
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return encoded_words(name)


def mailbox_header(name: str, mailbox: Mailbox) -> str:
    """`From`, `To` or `Reply-To` with one mailbox; display names quoted or encoded."""
    if not mailbox.display_name:
        return fold(name, [mailbox.address])
    return fold(name, [*_display_tokens(mailbox.display_name), f"<{mailbox.address}>"])


@dataclass(frozen=True, slots=True)
class Body:
    """One encoded text part: its transfer encoding and CRLF-terminated bytes."""

    subtype: str
    encoding: str
    data: bytes

    def headers(self) -> str:
        """Its Content-Type and Content-Transfer-Encoding fields."""
        return (
            f"Content-Type: text/{self.subtype}; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: {self.encoding}\r\n"
        )


def encode_body(content: str, subtype: str) -> Body:
    """Normalise every line end (CRLF, bare CR, bare LF) to CRLF, end with one, and pick
    7bit (ASCII, no NUL, lines <= 998 octets) or quoted-printable UTF-8.

    Raises UnicodeEncodeError on lone surrogates (invalid UTF-8)."""
    text = content.replace("\r\n", "\n").replace("\r", "\n") if "\r" in content else content
    if not text.endswith("\n"):
        text += "\n"
    if text.isascii() and "\x00" not in text and not _has_long_line(text):
        return Body(subtype, "7bit", text.replace("\n", "\r\n").encode("ascii"))
    data = text.replace("\n", "\r\n").encode("utf-8")
    # binascii keeps CRLF, encodes trailing blanks and a lone "." line, soft-breaks at 76.
    return Body(subtype, "quoted-printable", _qp_limit(binascii.b2a_qp(data, istext=True)))


def _has_long_line(text: str) -> bool:
    """Any line over MAX_LINE characters? A line that long covers a multiple of
    MAX_LINE + 1, so looking at the lines through those positions is enough."""
    for pos in range(0, len(text), MAX_LINE + 1):
        start = text.rfind("\n", 0, pos) + 1
        end = text.find("\n", pos)
        if (len(text) if end < 0 else end) - start > MAX_LINE:
            return True
    return False


def _qp_limit(encoded: bytes) -> bytes:
    """Re-break the lines binascii leaves at 77 octets (a line ending in an encoded blank)."""
    lines = encoded.split(b"\r\n")
    if max(map(len, lines)) <= _QP_LINE:
        return encoded
    out = []
    for line in lines:
        while len(line) > _QP_LINE:
            cut = _QP_LINE - 1
            # Never split an "=XX" escape.
            if line[cut - 1 : cut] == b"=":
                cut -= 1
            elif line[cut - 2 : cut - 1] == b"=":
                cut -= 2
            out.append(line[:cut] + b"=")
            line = line[cut:]
        out.append(line)
    return b"\r\n".join(out)


def assemble(header_block: str, bodies: list[Body], *, utf8: bool = False) -> bytes:
    """The whole message: `header_block` (complete CRLF-terminated fields), then
    MIME-Version, then one text part or a multipart/alternative of `bodies` (text first)."""
    head = header_block.encode("utf-8" if utf8 else "ascii")
    if len(bodies) == 1:
        body = bodies[0]
        return b"".join(
            (head, b"MIME-Version: 1.0\r\n", body.headers().encode("ascii"), b"\r\n", body.data)
        )
    boundary = _boundary(bodies)
    parts = [head, b"MIME-Version: 1.0\r\n"]
    parts.append(
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode("ascii")
    )
    delimiter = f"--{boundary}\r\n".encode("ascii")
    for body in bodies:
        parts += (delimiter, body.headers().encode("ascii"), b"\r\n", body.data)
    parts.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts)


def _boundary(bodies: list[Body]) -> str:
    # "=_" cannot occur in quoted-printable output; the random part makes a clash in 7bit
    # text improbable, and the check makes it impossible.
    while True:
        boundary = "=_" + os.urandom(16).hex()
        token = boundary.encode("ascii")
        if not any(token in b.data for b in bodies):
            return boundary
