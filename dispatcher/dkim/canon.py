"""Message parsing, signed-header selection and DKIM canonicalisation (RFC 6376 3.4, 5.4).

Byte for byte what dkimpy computes when it verifies (its rfc822_parse, select_headers and
canonicalization module), written with precompiled patterns because this runs for every
message. One deliberate difference: a body that does not end in CRLF is hashed with the CRLF
that SMTP DATA adds to it, so the signature matches the bytes the receiver gets.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dispatcher.errors import InvalidInput

Header = tuple[bytes, bytes]  # (name as written, raw value with its folding and final CRLF)

# (lower-case name, signed when absent). Every field present is over-signed: listed once more
# than it occurs, so a copy added in transit (a second From, a top Content-Type, a Date)
# breaks the signature (RFC 6376 8.15). A field signed when absent is listed once even when
# the message lacks it, so a replayer cannot add one (Sender, Cc, List-Id...).
SIGNED_FIELDS: tuple[tuple[bytes, bool], ...] = (
    (b"from", True),
    (b"to", True),
    (b"subject", True),
    (b"reply-to", True),
    (b"sender", True),
    (b"cc", True),
    (b"in-reply-to", True),
    (b"references", True),
    (b"list-id", True),
    (b"date", False),
    (b"message-id", False),
    (b"mime-version", False),
    (b"content-type", False),
    (b"content-transfer-encoding", False),
    (b"list-unsubscribe", False),
    (b"list-unsubscribe-post", False),
    (b"feedback-id", False),
)
_SIGNED = frozenset(name for name, _ in SIGNED_FIELDS)

_EOL = re.compile(rb"\r?\n")
# Field-name characters (RFC 5322 2.2: printable ASCII but the colon); deleting them from a
# valid name leaves nothing, which is cheaper per line than a regex match.
_NAME_CHARS = bytes(range(0x21, 0x7F))
_WSP = re.compile(rb"[\t ]+")


class MessageFormatError(InvalidInput):
    """The message cannot be signed as it is; `field` names the header field (or "header")."""

    code = "dkim_message_format"


def split_message(message: bytes) -> tuple[list[Header], bytes]:
    """Header fields in order and the body, with every line ending made CRLF (as SMTP sends)."""
    if message.count(b"\n") != message.count(b"\r\n"):
        message = _EOL.sub(b"\r\n", message)
    if message.startswith(b"\r\n") or not message:
        raise MessageFormatError(field="header", reason="the message has no header fields")
    end = message.find(b"\r\n\r\n")
    if end < 0:
        head = message[:-2] if message.endswith(b"\r\n") else message
        body = b""
    else:
        head, body = message[:end], message[end + 4 :]
    headers: list[Header] = []
    for n, line in enumerate(head.split(b"\r\n"), 1):
        if line[:1] in (b" ", b"\t"):
            if not headers:
                raise MessageFormatError(
                    field="header", reason="the first line is a continuation line"
                )
            name, value = headers[-1]
            headers[-1] = (name, value + line + b"\r\n")
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name.translate(None, _NAME_CHARS):
            raise MessageFormatError(field="header", reason=f"line {n} is not a header field")
        headers.append((name, value + b"\r\n"))
    return headers, body


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded value, WSP runs as one space, trimmed."""
    value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:  # the regex only when there is a run to compress
        value = _WSP.sub(b" ", value)
    return name.lower() + b":" + value.strip() + b"\r\n"


def simple_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.1: the field exactly as it is."""
    return name + b":" + value


def _strip_trailing_lines(body: bytes) -> bytes:
    # Exactly one CRLF at the end: empty lines at the end are ignored (RFC 6376 3.4.3/3.4.4).
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    if end == len(body):
        return body + b"\r\n"
    return body[: end + 2]


def _with_final_crlf(body: bytes) -> bytes:
    return body if not body or body.endswith(b"\r\n") else body + b"\r\n"


def simple_body(body: bytes) -> bytes:
    """RFC 6376 3.4.3 (an empty body is one CRLF)."""
    return _strip_trailing_lines(_with_final_crlf(body))


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4 (an empty body stays empty)."""
    body = _with_final_crlf(body)
    # Substring tests run at memchr speed; the regex only when there is something to compress
    # (a regex scan of a 4 KB body costs ~60 us). Compressing first leaves each line's trailing
    # WSP as one space, so removing " CRLF" afterwards equals RFC 6376's strip-then-compress.
    if b"\t" in body or b"  " in body:
        body = _WSP.sub(b" ", body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    body = _strip_trailing_lines(body)
    return b"" if body == b"\r\n" else body


HeaderCanon = Callable[[bytes, bytes], bytes]
BodyCanon = Callable[[bytes], bytes]
HEADER_CANON: dict[str, HeaderCanon] = {"relaxed": relaxed_header, "simple": simple_header}
BODY_CANON: dict[str, BodyCanon] = {"relaxed": relaxed_body, "simple": simple_body}


def select_signed(headers: list[Header], canon: HeaderCanon) -> tuple[tuple[int, ...], bytes]:
    """The h= list as a count per SIGNED_FIELDS entry, and the canonical bytes of the
    selected fields in h= order (each name's instances from the bottom up, RFC 6376 5.4.2)."""
    found: dict[bytes, list[Header]] = {}
    for h in headers:
        name = h[0].lower()
        if name in _SIGNED:
            found.setdefault(name, []).append(h)
    n_from = len(found.get(b"from", ()))
    if n_from != 1:
        raise MessageFormatError(
            field="From", reason=f"a message needs exactly one From field, found {n_from}"
        )
    counts: list[int] = []
    parts: list[bytes] = []
    for name, when_absent in SIGNED_FIELDS:
        fields = found.get(name)
        if fields is None:
            counts.append(int(when_absent))
            continue
        counts.append(len(fields) + 1)
        for field_name, value in reversed(fields):
            parts.append(canon(field_name, value))
    return tuple(counts), b"".join(parts)


def h_names(counts: tuple[int, ...]) -> list[bytes]:
    """The h= names for the counts returned by `select_signed`."""
    return [name for (name, _), n in zip(SIGNED_FIELDS, counts, strict=True) for _ in range(n)]
