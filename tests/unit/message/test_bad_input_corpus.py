"""Runs tests/corpus/bad_inputs.jsonl through parse_payload + MessageFactory.build."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.message.intake import MessageError, MessageFactory, parse_payload
from dispatcher.message.verp import Verp
from tests.corpus import NOW, Case, check_rendered, corpus_config, load_corpus

CASES = load_corpus()
REJECTS = [c for c in CASES if c.expect == "reject"]
ACCEPTS = [c for c in CASES if c.expect == "accept"]


@pytest.fixture(scope="module")
def verp() -> Verp:
    return Verp(b"corpus-secret-corpus-secret-0123", "b")


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory, verp: Verp) -> MessageFactory:
    config = corpus_config(Path(tmp_path_factory.mktemp("corpus")))
    return MessageFactory.from_config(config, verp)


def test_corpus_size() -> None:
    assert len(CASES) >= 100
    assert len(REJECTS) >= 50 and len(ACCEPTS) >= 30


@pytest.mark.parametrize("case", REJECTS, ids=lambda c: c.name)
def test_rejected_case_names_its_field(case: Case, factory: MessageFactory) -> None:
    with pytest.raises(MessageError) as info:
        factory.build(parse_payload(case.raw), now=NOW)
    assert info.value.field == case.field, str(info.value)
    assert not info.value.reason.startswith(f"{case.field}:"), str(info.value)
    if case.code is not None:
        assert info.value.code == case.code, str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("case", ACCEPTS, ids=lambda c: c.name)
def test_accepted_case_renders_safely(case: Case, factory: MessageFactory, verp: Verp) -> None:
    payload = parse_payload(case.raw)
    message = factory.build(payload, now=NOW)
    assert case.rcpt is not None
    assert message.rcpt == case.rcpt
    assert message.smtputf8 is case.smtputf8
    assert message.rcpt_domain == case.rcpt.rpartition("@")[2]
    assert message.rcpt_domain.isascii() and message.rcpt_domain == message.rcpt_domain.lower()
    assert not any(c in message.rcpt for c in "\r\n\x00 <>,")
    headers = payload.get("headers") or {}
    assert isinstance(headers, dict)
    parsed = check_rendered(
        message.body, rcpt=case.rcpt, extra_headers=headers, smtputf8=case.smtputf8
    )
    assert parsed["Message-ID"] == message.message_id
    envelope = verp.address(message.verp_token, "send1.mdplatform.example")
    assert envelope.isascii() and len(envelope.partition("@")[0]) <= 64
    assert verp.parse(envelope) == message.id


@pytest.mark.parametrize("field", ["text", "html"])
def test_20_mb_body_is_too_large(field: str, factory: MessageFactory) -> None:
    payload = parse_payload(ACCEPTS[0].raw)
    payload[field] = "A" * (20 * 1024 * 1024)
    with pytest.raises(MessageError) as info:
        factory.build(payload, now=NOW)
    assert (info.value.field, info.value.code) == (field, "too_large")


def test_rendered_size_limit_counts_encoding(verp: Verp, tmp_path: Path) -> None:
    """A body under the limit in characters, over it once quoted-printable encoded."""
    config = corpus_config(tmp_path)
    factory = MessageFactory.from_config(config, verp)
    small = MessageFactory(
        accounts=factory.accounts,
        streams=factory.streams,
        verp=verp,
        max_message_bytes=4096,
        feedback_sender_id="maildispatch",
    )
    payload = parse_payload(ACCEPTS[0].raw)
    payload["text"] = "é" * 3000  # 3000 characters, 6000 octets, 18000 encoded
    with pytest.raises(MessageError) as info:
        small.build(payload, now=NOW)
    assert (info.value.field, info.value.code) == ("text", "too_large")
    payload["text"] = "é" * 100
    assert len(small.build(payload, now=NOW).body) <= 4096
