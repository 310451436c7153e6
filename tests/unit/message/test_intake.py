"""MessageFactory.build: each field's validation and what ends up in the NewMessage."""

from __future__ import annotations

import calendar
import email.policy
import hashlib
import json
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from dispatcher.message.intake import (
    MessageError,
    MessageFactory,
    new_message_id,
    parse_payload,
    payload_hash,
)
from dispatcher.message.verp import Verp
from queues.protocol import NewMessage
from tests.corpus import NOW, check_rendered, corpus_config

VERP = Verp(b"unit-test-secret-unit-test-secre", "b")
DAY = 86400.0


def base(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "account": "acme",
        "idempotency_key": "order-1",
        "from": "Acme News <news@acme-news.example>",
        "to": "Jane Doe <jane@example.org>",
        "subject": "Your order",
        "text": "Thanks for your order.\n",
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> MessageFactory:
    config = corpus_config(Path(tmp_path_factory.mktemp("cfg")))
    return MessageFactory.from_config(config, VERP)


def parsed(message: NewMessage) -> EmailMessage:
    msg = BytesParser(policy=email.policy.default).parsebytes(message.body)
    assert isinstance(msg, EmailMessage)
    return msg


def refused(factory: MessageFactory, payload: Any) -> MessageError:
    with pytest.raises(MessageError) as info:
        factory.build(payload, now=NOW)
    return info.value


# --------------------------------------------------------------------------- the result


def test_new_message_fields(factory: MessageFactory) -> None:
    m = factory.build(base(), now=NOW)
    assert (m.account, m.idempotency_key, m.stream, m.priority) == (
        "acme",
        "order-1",
        "transactional",
        0,
    )
    assert (m.author_domain, m.rcpt, m.rcpt_domain) == (
        "acme-news.example",
        "jane@example.org",
        "example.org",
    )
    assert m.campaign is None and m.pool == "warm" and m.smtputf8 is False  # the account's pool
    assert len(m.id) == 32 and int(m.id, 16) >= 0
    assert m.message_id == f"<{m.id}@acme-news.example>"
    assert m.verp_token == VERP.token(m.id)
    assert VERP.parse(VERP.address(m.verp_token, "send1.mdplatform.example")) == m.id
    assert m.due_at == NOW
    assert m.expires_at == NOW + DAY
    check_rendered(m.body, rcpt="jane@example.org")


def test_headers_parse_back(factory: MessageFactory) -> None:
    m = factory.build(base(reply_to="Help Desk <help@acme-news.example>"), now=NOW)
    msg = parsed(m)
    assert msg["From"].addresses[0].display_name == "Acme News"
    assert msg["From"].addresses[0].addr_spec == "news@acme-news.example"
    assert msg["To"].addresses[0].display_name == "Jane Doe"
    assert msg["Reply-To"].addresses[0].addr_spec == "help@acme-news.example"
    assert msg["Subject"] == "Your order"
    assert msg["Message-ID"] == m.message_id
    assert msg["MIME-Version"] == "1.0"
    assert parsedate_to_datetime(msg["Date"]).timestamp() == int(NOW)
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "Thanks for your order.\r\n"
    assert msg["Feedback-ID"] == "none:acme:transactional:maildispatch"
    assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None
    assert b"DKIM-Signature" not in m.body


def test_ids_are_unique_and_time_ordered(factory: MessageFactory) -> None:
    ids = [factory.build(base(), now=NOW + i // 10).id for i in range(100)]
    assert len(set(ids)) == 100
    assert ids == sorted(ids)
    earlier = new_message_id(NOW + 100)
    assert new_message_id(NOW + 200) > earlier
    # a clock that steps back still gives increasing ids within the process
    assert new_message_id(NOW) > earlier
    # the same clock reading still gives increasing ids
    same = [new_message_id(5.0) for _ in range(50)]
    assert same == sorted(same) and len(set(same)) == 50


def test_message_id_domain_override(factory: MessageFactory) -> None:
    custom = MessageFactory(
        accounts=factory.accounts,
        streams=factory.streams,
        verp=VERP,
        max_message_bytes=factory.max_message_bytes,
        feedback_sender_id="fbl9",
        message_id_domain="mid.mdplatform.example",
    )
    m = custom.build(base(), now=NOW)
    assert m.message_id == f"<{m.id}@mid.mdplatform.example>"
    assert parsed(m)["Feedback-ID"] == "none:acme:transactional:fbl9"


def test_payload_hash_is_canonical_json(factory: MessageFactory) -> None:
    p = {"b": "ü", "a": [1, {"d": None, "c": True}]}
    canonical = '{"a":[1,{"c":true,"d":null}],"b":"ü"}'
    assert payload_hash(p) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    payload = base(metadata={"z": 1, "a": "é"})
    reordered = dict(reversed(list(payload.items())))
    first = factory.build(payload, now=NOW)
    again = factory.build(reordered, now=NOW + 60)
    assert first.payload_hash == again.payload_hash
    assert first.id != again.id
    other = factory.build(base(metadata={"z": 2, "a": "é"}), now=NOW)
    assert other.payload_hash != first.payload_hash


def test_build_does_not_change_the_payload(factory: MessageFactory) -> None:
    payload = base(headers={"X-A": "1"}, metadata={"k": [1]})
    before = json.dumps(payload, sort_keys=True)
    factory.build(payload, now=NOW)
    assert json.dumps(payload, sort_keys=True) == before


# --------------------------------------------------------------------------- bodies


def test_text_html_and_multipart(factory: MessageFactory) -> None:
    html_only = parsed(factory.build(base(text=None, html="<p>Hi</p>"), now=NOW))
    assert html_only.get_content_type() == "text/html"
    both = parsed(factory.build(base(html="<p>Hi</p>"), now=NOW))
    assert both.get_content_type() == "multipart/alternative"
    parts = list(both.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == "Thanks for your order."
    assert parts[1].get_content() == "<p>Hi</p>"


def test_body_line_ends_and_encoding(factory: MessageFactory) -> None:
    m = factory.build(base(text="a\n.\r\nb\r.\nc" + "\u00e9" * 600), now=NOW)
    check_rendered(m.body, rcpt="jane@example.org")
    msg = parsed(m)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content() == "a\r\n.\r\nb\r\n.\r\nc" + "\u00e9" * 600 + "\r\n"


def test_too_large_counts_the_rendered_size(tmp_path: Path) -> None:
    config = corpus_config(tmp_path, dispatch={"max_message_bytes": 2048})
    small = MessageFactory.from_config(config, VERP)
    assert small.max_message_bytes == 2048
    small.build(base(text="x" * 1000), now=NOW)
    err = refused(small, base(text="x" * 1900))  # under 2048 alone, over with headers
    assert (err.field, err.code) == ("text", "too_large")
    err = refused(small, base(text="x", html="y" * 3000))
    assert (err.field, err.code) == ("html", "too_large")


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("to", "rcpt", "smtputf8"),
    [
        ("jane@example.org", "jane@example.org", False),
        ("  <jane@example.org> ", "jane@example.org", False),
        ("Jane@Example.ORG", "Jane@example.org", False),
        ("jane@bücher.example", "jane@xn--bcher-kva.example", False),
        ("jane@XN--BCHER-KVA.example", "jane@xn--bcher-kva.example", False),
        ("jane@faß.de", "jane@xn--fa-hia.de", False),
        ("josé@example.org", "josé@example.org", True),
        ('"Doe, Jane" <jane@example.org>', "jane@example.org", False),
    ],
)
def test_recipient_forms(factory: MessageFactory, to: str, rcpt: str, smtputf8: bool) -> None:
    m = factory.build(base(to=to), now=NOW)
    assert m.rcpt == rcpt and m.smtputf8 is smtputf8
    assert m.rcpt_domain == rcpt.rpartition("@")[2]
    check_rendered(m.body, rcpt=rcpt, smtputf8=smtputf8)


def test_non_ascii_local_part_in_from_sets_smtputf8(tmp_path: Path) -> None:
    config = corpus_config(tmp_path)
    m = MessageFactory.from_config(config, VERP).build(
        base(**{"from": "früh@acme-news.example"}), now=NOW
    )
    assert m.smtputf8 is True
    check_rendered(m.body, rcpt="jane@example.org", smtputf8=True)


@pytest.mark.parametrize("field", ["to", "from", "reply_to"])
@pytest.mark.parametrize(
    "value",
    [
        "a@example.org, b@example.org",
        "a@example.org (b@example.org)",
        "g: a@example.org;",
        '"a b"@example.org',
        "a@[10.0.0.1]",
        "a",
        "@example.org",
        "a@example",
        "A <a@example.org> <b@example.org>",
        "a@example.org\r\nBcc: b@example.org",
        "",
        ["a@example.org"],
    ],
)
def test_bad_addresses_name_the_field(factory: MessageFactory, field: str, value: object) -> None:
    err = refused(factory, base(**{field: value}))
    assert err.field == field
    assert err.code in ("invalid", "required")


def test_from_domain_must_belong_to_the_account(factory: MessageFactory) -> None:
    err = refused(factory, base(**{"from": "news@creator-letters.example"}))
    assert (err.field, err.code) == ("from", "domain_not_allowed")
    ok = factory.build(base(account="creator", **{"from": "x@creator-letters.example"}), now=NOW)
    assert ok.author_domain == "creator-letters.example"


# --------------------------------------------------------------------------- other fields


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"account": None}, "account", "required"),
        ({"account": "ghost"}, "account", "invalid"),
        ({"account": 3}, "account", "invalid"),
        ({"idempotency_key": None}, "idempotency_key", "required"),
        ({"idempotency_key": "k" * 201}, "idempotency_key", "too_long"),
        ({"idempotency_key": "a\x7fb"}, "idempotency_key", "invalid"),
        ({"subject": None}, "subject", "required"),
        ({"subject": "a\nb"}, "subject", "invalid"),
        ({"subject": ["x"]}, "subject", "invalid"),
        ({"text": None}, "text", "required"),
        ({"text": None, "html": 5}, "html", "invalid"),
        ({"stream": "bulk"}, "stream", "invalid"),
        ({"priority": 1000}, "priority", "invalid"),
        ({"priority": False}, "priority", "invalid"),
        ({"campaign": "c\x00"}, "campaign", "invalid"),
        ({"campaign": "c" * 201}, "campaign", "too_long"),
        ({"pool": "nope"}, "pool", "invalid"),
        ({"metadata": [1]}, "metadata", "invalid"),
        ({"metadata": {"x": "m" * 70_000}}, "metadata", "too_large"),
        ({"metadata": {"x": float("nan")}}, "metadata.x", "invalid"),
        ({"metadata": {"x": b"bytes"}}, "metadata.x", "invalid"),
        ({"metadata": {"x": {1, 2}}}, "metadata.x", "invalid"),
        ({"headers": {"X-A": None}}, "headers.X-A", "invalid"),
        ({"headers": {"Sender": "x"}}, "headers.Sender", "forbidden_header"),
        ({"headers": {"content-id": "x"}}, "headers.content-id", "forbidden_header"),
        ({"headers": {"X A": "x"}}, "headers.X A", "invalid"),
        ({"unsubscribe": {"url": "ftp://x.example/"}}, "unsubscribe.url", "invalid"),
        ({"unsubscribe": {"mailto": "nope"}}, "unsubscribe.mailto", "invalid"),
        ({"unsubscribe": {"url": "https://x.example/", "x": 1}}, "unsubscribe.x", "unknown_field"),
        ({"send_at": "2030-01-01"}, "send_at", "invalid"),
        ({"send_at": float("inf")}, "send_at", "invalid"),
        ({"expires_at": NOW - 1}, "expires_at", "invalid"),
        ({"send_at": NOW + 2 * DAY}, "send_at", "invalid"),
        ({"cc": "x@example.org"}, "cc", "unknown_field"),
    ],
)
def test_field_errors(
    factory: MessageFactory, changes: dict[str, Any], field: str, code: str
) -> None:
    payload = base()
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    err = refused(factory, payload)
    assert (err.field, err.code) == (field, code), str(err)
    assert str(err).startswith(field.split(".")[0])


def test_not_a_mapping(factory: MessageFactory) -> None:
    err = refused(factory, ["not", "an", "object"])
    assert err.field == "payload"


def test_times(factory: MessageFactory) -> None:
    past = factory.build(base(send_at="2027-01-15T08:00:00+01:00"), now=NOW)
    assert past.due_at == calendar.timegm((2027, 1, 15, 7, 0, 0)) < NOW  # due at once
    later = factory.build(base(send_at=NOW + 3600), now=NOW)
    assert later.due_at == NOW + 3600 and later.expires_at == NOW + DAY
    short = factory.build(base(expires_at=NOW + 600), now=NOW)
    assert short.expires_at == NOW + 600
    far = factory.build(base(expires_at="2999-01-01T00:00:00Z"), now=NOW)
    assert far.expires_at == NOW + DAY  # capped by the stream's max_age
    broadcast = factory.build(
        base(stream="broadcast", unsubscribe={"url": "https://acme-news.example/u"}), now=NOW
    )
    assert broadcast.expires_at == NOW + 3 * DAY


def test_iso_and_epoch_send_at(factory: MessageFactory) -> None:
    iso = factory.build(base(send_at="2027-01-15T09:30:00Z"), now=NOW)
    assert iso.due_at == calendar.timegm((2027, 1, 15, 9, 30, 0))
    epoch = factory.build(base(send_at=NOW + 1234.5), now=NOW)
    assert epoch.due_at == NOW + 1234.5


def test_priority_campaign_pool(factory: MessageFactory) -> None:
    m = factory.build(base(priority=-7, campaign="spring: sale ✨", pool="warm"), now=NOW)
    assert (m.priority, m.campaign, m.pool) == (-7, "spring: sale ✨", "warm")
    feedback = parsed(m)["Feedback-ID"]
    assert feedback == "spring__sale__:acme:transactional:maildispatch"
    assert feedback.count(":") == 3


# --------------------------------------------------------------------------- unsubscribe


def test_broadcast_needs_unsubscribe(factory: MessageFactory) -> None:
    err = refused(factory, base(stream="broadcast"))
    assert (err.field, err.code) == ("unsubscribe", "required")


def test_account_may_be_allowed_broadcast_without_unsubscribe(tmp_path: Path) -> None:
    accounts = [
        {"name": "acme", "author_domains": ["acme-news.example"], "pool": "warm"},
        {
            "name": "internal",
            "author_domains": ["creator-letters.example"],
            "pool": "warm",
            "allow_broadcast_without_unsubscribe": True,
        },
    ]
    f = MessageFactory.from_config(corpus_config(tmp_path, accounts=accounts), VERP)
    m = f.build(
        base(account="internal", stream="broadcast", **{"from": "x@creator-letters.example"}),
        now=NOW,
    )
    assert m.stream == "broadcast"
    assert refused(f, base(stream="broadcast")).field == "unsubscribe"


def test_stream_config_decides(tmp_path: Path) -> None:
    streams = {"broadcast": {"require_unsubscribe": False}}
    f = MessageFactory.from_config(corpus_config(tmp_path, streams=streams), VERP)
    assert f.build(base(stream="broadcast"), now=NOW).stream == "broadcast"


def test_list_unsubscribe_headers(factory: MessageFactory) -> None:
    both = parsed(
        factory.build(
            base(
                stream="broadcast",
                unsubscribe={
                    "url": "https://acme-news.example/u?id=1,2",
                    "mailto": "unsub@acme-news.example",
                },
            ),
            now=NOW,
        )
    )
    assert both["List-Unsubscribe"] == (
        "<mailto:unsub@acme-news.example>, <https://acme-news.example/u?id=1%2C2>"
    )
    assert both["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    mail_only = parsed(
        factory.build(
            base(unsubscribe={"mailto": "mailto:unsub@acme-news.example?subject=stop"}), now=NOW
        )
    )
    assert mail_only["List-Unsubscribe"] == "<mailto:unsub@acme-news.example?subject=stop>"
    assert mail_only["List-Unsubscribe-Post"] is None


# --------------------------------------------------------------------------- extra headers


def test_extra_headers_in_order(factory: MessageFactory) -> None:
    headers = {"X-Ref": "a1", "In-Reply-To": "<q@example.org>", "X-Note": "Grüße", "X-Empty": ""}
    m = factory.build(base(headers=headers), now=NOW)
    msg = check_rendered(m.body, rcpt="jane@example.org", extra_headers=headers)
    for name, value in headers.items():
        assert msg[name] == value
    names = [k for k, _ in msg.items()]
    assert [n for n in names if n in headers] == list(headers)


def test_too_many_headers(factory: MessageFactory) -> None:
    err = refused(factory, base(headers={f"X-{i}": "v" for i in range(101)}))
    assert (err.field, err.code) == ("headers", "too_large")


# --------------------------------------------------------------------------- parse_payload


def test_parse_payload() -> None:
    assert parse_payload(b'{"a": {"b": [1, {"c": 2}]}}') == {"a": {"b": [1, {"c": 2}]}}
    cases = {
        b'{"a": 1, "a": 2}': ("a", "duplicate"),
        b'{"h": {"X": 1, "X": 2}}': ("h.X", "duplicate"),
        b'{"l": [{"k": 1, "k": 1}]}': ("l[0].k", "duplicate"),
        b'{"a": NaN}': ("payload", "invalid"),
        b'{"a": -Infinity}': ("payload", "invalid"),
        b"[1]": ("payload", "invalid"),
        b'"text"': ("payload", "invalid"),
        b'{"a": "\xff"}': ("payload", "invalid"),
        b"": ("payload", "invalid"),
        b'{"a": 1} trailing': ("payload", "invalid"),
    }
    for raw, (field, code) in cases.items():
        with pytest.raises(MessageError) as info:
            parse_payload(raw)
        assert (info.value.field, info.value.code) == (field, code), raw


def test_message_error_shape() -> None:
    err = MessageError(field="headers.X\r\nBcc", code="invalid", reason="bad")
    assert isinstance(err, ValueError)
    assert err.field == "headers.X\r\nBcc" and err.code == "invalid"
    assert "\r" not in str(err) and "\n" not in str(err)
