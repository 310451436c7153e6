"""The bad-input corpus: enqueue payloads meant to break validation, rendering or SMTP.

`bad_inputs.jsonl` holds one case a line (regenerate it with `python tests/corpus/generate.py`):

    {"name": str, "expect": "reject" | "accept",
     "payload": {...}            # the enqueue JSON object, or
     "raw": str                  # the document as sent (duplicate keys, bad JSON), or
     "raw_base64": str,          # ... as bytes (invalid UTF-8)
     "field": str, "code": str,  # reject: the MessageError key path and code
     "rcpt": str, "smtputf8": bool}  # accept: the envelope recipient it must get

Payloads use the accounts of the repo's config.toml (`acme` with author domain
acme-news.example, `creator` with creator-letters.example, pool `warm`); `corpus_config()`
builds an equivalent Config. Other suites (CLI, HTTP, SMTP sink) import `load_corpus` and
feed `case.raw` to their own entry point.
"""

from __future__ import annotations

import base64
import email.policy
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email import errors
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from dispatcher.config import Config, parse_config

CORPUS_DIR = Path(__file__).resolve().parent
BAD_INPUTS = CORPUS_DIR / "bad_inputs.jsonl"
# A fixed "now" for builds; the corpus's dates are far enough away to hold for any now
# between 2001 and 2999.
NOW = 1_800_000_000.0


@dataclass(frozen=True)
class Case:
    """One corpus case. `raw` is the exact enqueue document (UTF-8 JSON unless broken)."""

    name: str
    raw: bytes
    expect: str
    field: str | None = None
    code: str | None = None
    rcpt: str | None = None
    smtputf8: bool = False

    @property
    def payload(self) -> Any:
        """The decoded document (for cases whose raw form is valid JSON without
        duplicate keys); surrogates and all."""
        return json.loads(self.raw)


def _case(obj: dict[str, Any]) -> Case:
    if "payload" in obj:
        # ensure_ascii keeps lone surrogates as \\udc80 escapes, as a client would send them.
        raw = json.dumps(obj["payload"], ensure_ascii=True).encode("ascii")
    elif "raw" in obj:
        raw = obj["raw"].encode("utf-8", "surrogatepass")
    else:
        raw = base64.b64decode(obj["raw_base64"])
    if obj["expect"] not in ("accept", "reject"):
        raise ValueError(f"{obj['name']}: expect must be accept or reject")
    if obj["expect"] == "reject" and not obj.get("field"):
        raise ValueError(f"{obj['name']}: a reject case names its field")
    if obj["expect"] == "accept" and not obj.get("rcpt"):
        raise ValueError(f"{obj['name']}: an accept case names its rcpt")
    return Case(
        name=obj["name"],
        raw=raw,
        expect=obj["expect"],
        field=obj.get("field"),
        code=obj.get("code"),
        rcpt=obj.get("rcpt"),
        smtputf8=bool(obj.get("smtputf8", False)),
    )


def iter_corpus(path: Path = BAD_INPUTS) -> Iterator[Case]:
    """Cases of a corpus file, in file order."""
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield _case(json.loads(line))
                except (KeyError, ValueError) as e:
                    raise ValueError(f"{path.name}:{number}: {e}") from None


def load_corpus(path: Path = BAD_INPUTS) -> list[Case]:
    """All cases of a corpus file; names are unique."""
    cases = list(iter_corpus(path))
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError("corpus case names must be unique")
    return cases


def corpus_config(base_dir: Path, **overrides: Any) -> Config:
    """A Config with the corpus's accounts (as in config.toml) and default limits;
    `overrides` replace top-level tables (e.g. `streams=...`, `dispatch=...`)."""
    raw: dict[str, Any] = {
        "feedback_sender_id": "maildispatch",
        "dkim": {
            "keys": [
                {"domain": "acme-news.example", "selector": "s1", "file": "k/acme.pem"},
                {"domain": "creator-letters.example", "selector": "s1", "file": "k/cr.pem"},
                {"domain": "send1.mdplatform.example", "selector": "s1", "file": "k/s1.pem"},
            ]
        },
        "accounts": [
            {"name": "acme", "author_domains": ["acme-news.example"], "pool": "warm"},
            {"name": "creator", "author_domains": ["creator-letters.example"], "pool": "warm"},
        ],
        "pools": [
            {
                "name": "warm",
                "ips": [{"address": "127.0.0.2", "ehlo": "mta1.mdplatform.example"}],
                "domains": [{"domain": "send1.mdplatform.example"}],
            },
            {  # another customer's dedicated IPs: no corpus account may name it
                "name": "dedicated",
                "ips": [{"address": "127.0.0.9", "ehlo": "mta9.mdplatform.example"}],
                "domains": [{"domain": "send9.mdplatform.example", "sign": False}],
            },
        ],
    }
    raw.update(overrides)
    return parse_config(raw, base_dir=base_dir)


# Fields a rendered message may carry besides the payload's own `headers`.
ENGINE_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "reply-to",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "feedback-id",
    }
)
SINGLETON_HEADERS = ("from", "to", "subject", "date", "message-id", "mime-version")
_BARE_EOL = re.compile(rb"(?<!\r)\n|\r(?!\n)")


def header_names(message: bytes) -> list[str]:
    """Lower-cased names of the top-level header fields, in order, duplicates kept."""
    head = message.split(b"\r\n\r\n", 1)[0]
    names = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        assert colon, f"header line without a colon: {line[:80]!r}"
        names.append(name.decode("ascii").lower())
    return names


def check_rendered(
    message: bytes,
    *,
    rcpt: str,
    extra_headers: Iterable[str] = (),
    smtputf8: bool = False,
) -> EmailMessage:
    """Assert that `message` is safe to hand to an SMTP client; returns it parsed.

    CRLF line ends only (so no "\\n.\\r\\n"-style smuggling), no NUL, no line over 998
    octets, no header names beyond the engine's and `extra_headers`, one of each singleton,
    exactly one To recipient equal to `rcpt`, and a parse without defects.
    """
    assert _BARE_EOL.search(message) is None, "bare CR or LF"
    assert b"\x00" not in message, "NUL"
    assert message.endswith(b"\r\n"), "does not end with CRLF"
    longest = max(len(line) for line in message.split(b"\r\n"))
    assert longest <= 998, f"line of {longest} octets"
    names = header_names(message)
    allowed = ENGINE_HEADERS | {h.lower() for h in extra_headers}
    assert set(names) <= allowed, f"unexpected header fields {set(names) - allowed}"
    for name in SINGLETON_HEADERS:
        assert names.count(name) == 1, f"{name} appears {names.count(name)} times"
    if smtputf8:
        parsed = Parser(policy=email.policy.default).parsestr(message.decode("utf-8"))
    else:
        message.decode("ascii")  # 8-bit header or body bytes need SMTPUTF8/8BITMIME
        parsed = BytesParser(policy=email.policy.default).parsebytes(message)
    assert isinstance(parsed, EmailMessage)
    assert not parsed.defects, parsed.defects
    to = parsed["To"]
    addresses = to.addresses
    assert len(addresses) == 1, addresses
    assert addresses[0].addr_spec == rcpt, (addresses[0].addr_spec, rcpt)
    allowed_defects = (errors.NonASCIILocalPartDefect,) if smtputf8 else ()
    for field in ("From", "To", "Subject", "Reply-To"):
        if parsed[field] is not None:
            bad = [d for d in parsed[field].defects if not isinstance(d, allowed_defects)]
            assert not bad, (field, bad)
    for part in parsed.walk():
        assert not part.defects, part.defects
    return parsed


def rfc2047_mailbox(raw_value: str) -> tuple[str, str]:
    """(display name, addr-spec) of one raw mailbox header value, decoded per RFC 2047 6.2:
    blanks between adjacent encoded-words are dropped. (The `email.policy.default` parser
    keeps them inside address phrases, unlike RFC-conformant readers.)"""
    pairs = getaddresses([raw_value.replace("\r\n", "")])
    assert len(pairs) == 1, pairs
    name, addr = pairs[0]
    return str(make_header(decode_header(name))), addr
