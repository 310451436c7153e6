"""Hypothesis: accepted messages render to safe CRLF text that parses back to what was sent."""

from __future__ import annotations

import email.policy
import os
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from pathlib import Path
from typing import Any

import idna
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dispatcher.message.intake import MAX_DISPLAY_NAME, MessageError, MessageFactory
from dispatcher.message.verp import Verp
from tests.corpus import NOW, check_rendered, corpus_config, rfc2047_mailbox

SETTINGS = settings(
    # HYPO_EXAMPLES raises the count for a longer hunt (3,000 found the display-name case).
    max_examples=int(os.environ.get("HYPO_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"

# Everything printable, blanks of every kind, format characters; no C0/C1 controls, no
# lone surrogates (those are refused: see the corpus).
header_chars = st.characters(blacklist_categories=("Cc", "Cs")) | st.just("\t")
# Pieces a naive renderer gets wrong: text that reads as an encoded-word, runs of blanks.
tricky = st.sampled_from(["=?utf-8?b?w6k=?=", "=?iso-8859-1?q?a_b?=", "  ", " ", '"', "\\"])
subjects = (
    st.text(header_chars, min_size=1, max_size=300)
    | st.lists(st.text(header_chars, max_size=20) | tricky, min_size=1).map("".join)
).filter(lambda s: s.strip() != "")
names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=80) | st.lists(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=10) | tricky
).map("".join)
atoms = st.text(st.sampled_from(ATEXT), min_size=1, max_size=10)
ascii_locals = st.lists(atoms, min_size=1, max_size=4).map(".".join)
unicode_locals = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Lo")), min_size=1)
# "=?" is refused in local parts (readers decode it as an encoded-word).
locals_ = (ascii_locals | unicode_locals).filter(lambda s: len(s.encode()) <= 64 and "=?" not in s)
# "--" in the third and fourth positions is reserved (RFC 5891 4.2.3.1): not a valid label.
labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True).filter(
    lambda label: label[2:4] != "--"
)
domains = st.builds(
    lambda ls, tld: ".".join([*ls, tld]),
    st.lists(labels, min_size=1, max_size=3),
    st.sampled_from(["org", "example", "com", "xn--p1ai"]),
) | st.sampled_from(
    ["bücher.example", "例え.テスト", "müller.de", "xn--bcher-kva.example", "faß.de", "ΣΊΣΥΦΟΣ.gr"]
)

# Bodies: any text without lone surrogates, with every kind of line end and dot lines, and
# now and then a line far over 998 octets.
body_pieces = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=60),
    st.sampled_from(["\r\n", "\n", "\r", ".", "\r\n.\r\n", "\n.\n", "\r.\r", "\x00", " \t"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", " ", "."]), st.integers(900, 2500)),
)
bodies = st.lists(body_pieces, min_size=1, max_size=12).map(lambda p: "".join(p) or "x")


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> MessageFactory:
    config = corpus_config(Path(tmp_path_factory.mktemp("props")))
    return MessageFactory.from_config(config, Verp(b"property-secret-property-secret!", "b"))


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lines_as_sent(text: str) -> str:
    """Text with every line end as LF and a final one, as the renderer promises."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def parse(body: bytes, smtputf8: bool) -> EmailMessage:
    if smtputf8:
        msg = Parser(policy=email.policy.default).parsestr(body.decode("utf-8"))
    else:
        msg = BytesParser(policy=email.policy.default).parsebytes(body)
    assert isinstance(msg, EmailMessage)
    return msg


def raw_header(body: bytes, name: str) -> str:
    head = body.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    values = []
    for field in head.replace("\r\n ", " ").replace("\r\n\t", "\t").split("\r\n"):
        fname, _, value = field.partition(":")
        if fname.lower() == name.lower():
            values.append(value.strip())
    assert len(values) == 1, (name, values)
    return values[0]


@SETTINGS
@given(
    subject=subjects,
    from_name=names,
    to_name=names,
    local=locals_,
    domain=domains,
    text=bodies | st.none(),
    html=bodies | st.none(),
)
def test_accepted_messages_parse_back(
    factory: MessageFactory,
    subject: str,
    from_name: str,
    to_name: str,
    local: str,
    domain: str,
    text: str | None,
    html: str | None,
) -> None:
    if text is None and html is None:
        text = "x"
    payload: dict[str, Any] = {
        "account": "acme",
        "idempotency_key": "prop",
        "from": f"{quoted(from_name)} <news@acme-news.example>",
        "to": f"{quoted(to_name)} <{local}@{domain}>",
        "subject": subject,
    }
    if text is not None:
        payload["text"] = text
    if html is not None:
        payload["html"] = html
    try:
        message = factory.build(payload, now=NOW)
    except MessageError as e:
        # Valid by construction except for IDN labels the IDNA codec refuses, and display
        # names over the length limit (the generator can build long ones).
        if e.code == "too_long":
            assert max(len(from_name), len(to_name)) > MAX_DISPLAY_NAME, str(e)
            event("refused: long display name")
            return
        assert e.field == "to" and not domain.isascii(), str(e)
        event("refused: IDN label")
        return
    event("accepted")
    a_domain = idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    rcpt = f"{local}@{a_domain}"
    assert message.rcpt == rcpt and message.rcpt_domain == a_domain
    assert message.smtputf8 is (not local.isascii())

    msg = check_rendered(message.body, rcpt=rcpt, smtputf8=message.smtputf8)
    assert msg["Subject"] == subject
    assert rfc2047_mailbox(raw_header(message.body, "From")) == (
        from_name.strip(),
        "news@acme-news.example",
    )
    to_display, to_addr = rfc2047_mailbox(raw_header(message.body, "To"))
    assert to_display == to_name.strip()
    assert to_addr == rcpt

    sent = [(c, t) for c, t in (("text/plain", text), ("text/html", html)) if t]
    if len(sent) == 1:
        assert msg.get_content_type() == sent[0][0]
        got = msg.get_content()
        assert isinstance(got, str)
        assert got.replace("\r\n", "\n") == lines_as_sent(sent[0][1])
    else:
        parts = list(msg.iter_parts())
        assert [p.get_content_type() for p in parts] == [c for c, _ in sent]
        for part, (_, sent_text) in zip(parts, sent, strict=True):
            got = part.get_content()
            assert isinstance(got, str)
            # The CRLF before a boundary belongs to the boundary.
            assert got.replace("\r\n", "\n") + "\n" == lines_as_sent(sent_text)


hostile = st.lists(
    st.text(
        st.characters()
        | st.sampled_from(["\r", "\n", "\x00", "\udc80", "\ud800", ",", "<", '"', "=", " "]),
        max_size=40,
    )
    | st.sampled_from(["=?utf-8?b?w6k=?=", "\r\n.\r\n", "\r\nBcc: x@evil.example"])
    # long runs: folding and the 998-octet limit
    | st.builds(lambda c, n: c * n, st.sampled_from(["a", " ", "é", "a "]), st.integers(50, 1500)),
    max_size=3,
).map("".join)


@SETTINGS
@given(
    key=st.sampled_from(
        ["subject", "to", "from", "reply_to", "campaign", "header", "url", "mailto"]
    ),
    value=hostile,
    header_name=st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True) | hostile,
)
def test_hostile_values_are_refused_or_harmless(
    factory: MessageFactory, key: str, value: str, header_name: str
) -> None:
    """Whatever lands in a header or address field: a MessageError naming it, or a message
    that is safe to send (CRLF only, short lines, the one intended recipient)."""
    payload: dict[str, Any] = {
        "account": "acme",
        "idempotency_key": "fuzz",
        "from": "news@acme-news.example",
        "to": "jane@example.org",
        "subject": "s",
        "text": "t",
    }
    extra: list[str] = []
    if key == "to":
        payload["to"], field = f"jane{value}@example.org", "to"
    elif key == "from":
        payload["from"], field = f"{value}news@acme-news.example", "from"
    elif key == "reply_to":
        payload["reply_to"], field = f"{value} <help@acme-news.example>", "reply_to"
    elif key == "header":
        payload["headers"], field = {header_name: value}, f"headers.{header_name}"
        extra = [header_name]
    elif key == "url":
        payload["unsubscribe"] = {"url": f"https://acme-news.example/{value}"}
        field = "unsubscribe.url"
    elif key == "mailto":
        payload["unsubscribe"] = {"mailto": f"unsub@acme-news.example?subject={value}"}
        field = "unsubscribe.mailto"
    else:
        payload[key], field = value, key
    try:
        message = factory.build(payload, now=NOW)
    except MessageError as e:
        assert e.field == field, str(e)
        event(f"{key}: refused {e.code}")
        return
    event(f"{key}: accepted")
    msg = check_rendered(
        message.body, rcpt=message.rcpt, extra_headers=extra, smtputf8=message.smtputf8
    )
    assert message.rcpt.endswith("@example.org")
    if key == "header":
        assert msg[header_name] == value
    elif key == "subject":
        assert msg["Subject"] == value
