"""Our parsing and canonicalisation equal dkimpy's, byte for byte, on generated messages;
and whatever the message, the signature verifies with dkim.verify()."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest
from dkim.canonicalization import Relaxed, Simple
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.config import DkimKeyConfig
from dispatcher.dkim.canon import (
    relaxed_body,
    relaxed_header,
    simple_body,
    simple_header,
    split_message,
)
from dispatcher.dkim.keys import generate_key, signing_key
from dispatcher.dkim.signer import DkimSigner
from dispatcher.dkim.store import KeyStore

# Text with the characters canonicalisation cares about: runs of spaces and tabs, CR, LF.
_chars = st.sampled_from(
    [b"a", b"Z", b"0", b" ", b"  ", b"\t", b"=", b";", b"\xc3\xa9", b":", b"\r"]
)
_text = st.lists(_chars, max_size=30).map(b"".join)
_lines = st.lists(_text, max_size=12)
_names = st.sampled_from(
    [
        b"From",
        b"To",
        b"Subject",
        b"cc",
        b"Reply-To",
        b"X-Other",
        b"List-Unsubscribe",
        b"Feedback-ID",
    ]
)


@st.composite
def header_value(draw: st.DrawFn) -> bytes:
    """A raw field value: first line plus folded continuation lines, ending in CRLF."""
    first = draw(_text)
    cont = draw(st.lists(st.tuples(st.sampled_from([b" ", b"\t", b"  "]), _text), max_size=3))
    return first + b"".join(b"\r\n" + ws + t for ws, t in cont) + b"\r\n"


@st.composite
def whole_message(draw: st.DrawFn) -> bytes:
    fields = [(b"From", b" a@example.com\r\n")]
    fields += draw(
        st.lists(st.tuples(_names.filter(lambda n: n != b"From"), header_value()), max_size=6)
    )
    fields = draw(st.permutations(fields))
    body = b"\r\n".join(draw(_lines))
    if draw(st.booleans()):
        body += b"\r\n"
    return b"".join(n + b":" + v for n, v in fields) + b"\r\n" + body


@given(body=_lines, final=st.booleans())
def test_body_canonicalisation_matches_dkimpy(body: list[bytes], final: bool) -> None:
    raw = b"\r\n".join(body) + (b"\r\n" if final or not body else b"")
    # dkimpy hashes the body as given; SMTP sends a final CRLF, which we add when missing.
    as_sent = raw if not raw or raw.endswith(b"\r\n") else raw + b"\r\n"
    assert relaxed_body(raw) == Relaxed.canonicalize_body(as_sent)
    assert simple_body(raw) == Simple.canonicalize_body(as_sent)


@given(name=_names, value=header_value())
def test_header_canonicalisation_matches_dkimpy(name: bytes, value: bytes) -> None:
    ((n, v),) = Relaxed.canonicalize_headers([(name, value)])
    assert relaxed_header(name, value) == n + b":" + v
    ((n, v),) = Simple.canonicalize_headers([(name, value)])
    assert simple_header(name, value) == n + b":" + v


@given(msg=whole_message(), lf=st.booleans())
def test_split_matches_rfc822_parse(msg: bytes, lf: bool) -> None:
    if lf:
        msg = msg.replace(b"\r\n", b"\n")
    headers, body = split_message(msg)
    want_headers, want_body = dkim.rfc822_parse(msg)
    assert [tuple(h) for h in want_headers] == headers
    assert body == want_body


@pytest.fixture(scope="module")
def store() -> KeyStore:
    keys = []
    for selector, key_type in (("r1", "rsa"), ("e1", "ed25519")):
        cfg = DkimKeyConfig("example.com", selector, Path("/unused"), key_type=key_type)
        keys.append(signing_key(cfg, generate_key(key_type)))
    return KeyStore(keys)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    msg=whole_message(),
    canon=st.sampled_from(["relaxed/relaxed", "relaxed/simple", "simple/simple", "simple/relaxed"]),
)
def test_any_message_verifies(store: KeyStore, msg: bytes, canon: str) -> None:
    records = store.dns_records()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    # As the receiver gets it: SMTP ends the data with CRLF.
    sent = msg if msg.endswith(b"\r\n") else msg + b"\r\n"
    signed = DkimSigner(store, canon).sign(msg, ["example.com"], 1767225600.0) + sent
    d = dkim.DKIM(signed)
    assert d.verify(idx=0, dnsfunc=dnsfunc)
    assert d.verify(idx=1, dnsfunc=dnsfunc)
