"""The standard benchmark message: 4.2 KB of plain text, 50 lines of 76 characters.

Other sizes keep the same header set and scale the number of body lines. The body is
deterministic (a fixed pangram cycle), so runs compare like with like.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

STANDARD_SIZE = 4200
LINE_CHARS = 76
_PANGRAM = "The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs. "

AUTHOR_DOMAIN = "bench-author.example"
RCPT_DOMAIN = "bench-rcpt.example"
SENDER = f"sender@{AUTHOR_DOMAIN}"


def body_lines(size: int = STANDARD_SIZE) -> list[str]:
    """Lines of LINE_CHARS characters whose total (with CRLFs and headers) is about `size`.

    The standard 4,200 bytes gives 50 lines; headers are counted as ~300 bytes.
    """
    if size < 1:
        raise ValueError("size: must be at least 1 byte")
    count = max(1, round((size - 300) / (LINE_CHARS + 2)))
    text = _PANGRAM * (((count * LINE_CHARS) // len(_PANGRAM)) + 2)
    return [text[i * LINE_CHARS : (i + 1) * LINE_CHARS] for i in range(count)]


def body_text(size: int = STANDARD_SIZE) -> str:
    """The body as text with LF line ends (what an upstream app would hand to enqueue)."""
    return "\n".join(body_lines(size)) + "\n"


def recipient(index: int) -> str:
    """A unique recipient per message, so arrivals can be matched without parsing bodies."""
    return f"r{index}@{RCPT_DOMAIN}"


def message_id(index: int, run: str) -> str:
    return f"<bench.{run}.{index}@{AUTHOR_DOMAIN}>"


@dataclass(frozen=True, slots=True)
class StandardMessage:
    """One rendered message: envelope and RFC 5322 bytes (CRLF line ends)."""

    sender: str
    rcpt: str
    message_id: str
    data: bytes


def render(index: int, run: str, size: int = STANDARD_SIZE) -> StandardMessage:
    """Render message `index` of run `run` with the standard header set."""
    rcpt = recipient(index)
    mid = message_id(index, run)
    headers = [
        f"From: Bench Sender <{SENDER}>",
        f"To: <{rcpt}>",
        f"Subject: Benchmark message {index}",
        f"Date: {email.utils.formatdate(localtime=False, usegmt=True)}",
        f"Message-ID: {mid}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
    ]
    data = "\r\n".join([*headers, "", *body_lines(size)]) + "\r\n"
    return StandardMessage(SENDER, rcpt, mid, data.encode("ascii"))
