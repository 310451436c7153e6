"""SMTP replies from untrusted servers: one bounded parser and one text cleaner for both clients.

A reply is held to `MAX_REPLY_BYTES` and `MAX_REPLY_LINES` (RFC 5321 allows 512 octets a
line; real servers send a few lines): a server that streams continuation lines forever gets
`ReplyTooLong`, and the session drops the link. Reply text is decoded with invalid bytes
replaced and control characters other than the line break removed, so what is stored, logged
or classified is always valid, printable Unicode.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from dispatcher.errors import MaildispatchError

MAX_REPLY_BYTES = 32 * 1024  # one whole reply, every line counted with its line end
MAX_REPLY_LINES = 100

# C0 controls except LF, DEL, C1 controls, and the bidi/line separators that can reorder or
# split a terminal line. Tab becomes a space (below), not removed: it separates words.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class ReplyError(MaildispatchError, ConnectionError):
    """The server's bytes are not a reply the dialogue can go on after; `code` says why."""

    code = "bad_reply"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedReply(ReplyError):
    """A line that is not an SMTP reply line (no three-digit code)."""

    code = "malformed_reply"

    def __init__(self, line: bytes) -> None:
        super().__init__(f"malformed SMTP reply line: {clean_bytes(line[:80])!r}")
        self.line = line[:80]


class ReplyTooLong(ReplyError):
    """A reply over `MAX_REPLY_BYTES` or `MAX_REPLY_LINES`."""

    code = "reply_too_long"

    def __init__(self, what: str) -> None:
        super().__init__(f"reply too long ({what}): the server's reply was refused")


class Reply(NamedTuple):
    """One complete SMTP reply: the lines' texts joined with "\\n", as aiosmtplib does."""

    code: int
    text: str


def clean_bytes(raw: bytes) -> str:
    """Remote bytes as safe text: invalid UTF-8 replaced, controls except LF removed."""
    text = raw.decode("utf-8", "replace")
    if text.isprintable():
        return text
    return _CONTROL.sub("", text.replace("\t", " "))


def clean_text(text: str) -> str:
    """`clean_bytes` for text another library decoded (aiosmtplib uses surrogateescape)."""
    if text.isprintable():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the original bytes back
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")  # lone surrogates: invalid, replaced
    return clean_bytes(raw)


def escape_for_log(text: str, limit: int = 200) -> str:
    """Remote text fit for one log line: line breaks and controls shown as escapes."""
    return text[:limit].encode("unicode_escape", "backslashreplace").decode("ascii")


class ReplyParser:
    """Turns bytes from the wire into `Reply` values, holding at most one bounded reply.

    `feed` raises `ReplyError` (and nothing else) for bytes that are not SMTP; after that the
    parser is spent: the caller drops the connection.
    """

    __slots__ = ("_buf", "_lines", "_size")

    def __init__(self) -> None:
        self._buf = bytearray()  # bytes of the line being received
        self._lines: list[bytes] = []  # texts of the reply being received
        self._size = 0  # bytes of the reply being received, line ends included

    @property
    def held(self) -> int:
        """Bytes held for the reply not yet complete (never more than MAX_REPLY_BYTES)."""
        return self._size + len(self._buf)

    def reset(self) -> None:
        """Forget everything received (plaintext bytes sent after STARTTLS's 220)."""
        self._buf.clear()
        self._lines.clear()
        self._size = 0

    def feed(self, data: bytes) -> list[Reply]:
        """The replies completed by `data`, in order."""
        buf = self._buf
        buf += data
        out: list[Reply] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            self._size += len(line) + 1
            if self._size > MAX_REPLY_BYTES:
                self._spent()
                raise ReplyTooLong(f"over {MAX_REPLY_BYTES} bytes")
            code = line[:3]
            if len(code) != 3 or not code.isdigit() or line[3:4] not in (b"", b" ", b"-", b"\r"):
                self._spent()
                raise MalformedReply(line)
            self._lines.append(line[4:].strip(b" \t\r"))
            if line[3:4] == b"-":
                if len(self._lines) >= MAX_REPLY_LINES:
                    self._spent()
                    raise ReplyTooLong(f"over {MAX_REPLY_LINES} lines")
                continue
            text = clean_bytes(b"\n".join(self._lines))
            self._lines.clear()
            self._size = 0
            out.append(Reply(int(code), text))
        if start:
            del buf[:start]
        if self._size + len(buf) > MAX_REPLY_BYTES:
            self._spent()
            raise ReplyTooLong(f"over {MAX_REPLY_BYTES} bytes")
        return out

    def _spent(self) -> None:
        self.reset()
