"""Hostile enqueue documents (issue 10, finding 6): only MessageError, never a crash.

The corpus holds one case per former crash; these properties hunt for more: arbitrary
bytes, arbitrary JSON shapes in every field, deep nesting, long numbers.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.message.intake import (
    FIELDS,
    MAX_JSON_DEPTH,
    MessageError,
    MessageFactory,
    idna_rewrite,
    json_depth,
    parse_payload,
)
from dispatcher.message.verp import Verp
from tests.corpus import NOW, corpus_config

SETTINGS = settings(
    max_examples=int(os.environ.get("HYPO_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BASE = {
    "account": "acme",
    "idempotency_key": "k1",
    "from": "news@acme-news.example",
    "to": "jane@example.org",
    "subject": "Hi",
    "text": "Hello",
}
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> MessageFactory:
    config = corpus_config(Path(tmp_path_factory.mktemp("hostile")))
    return MessageFactory.from_config(config, Verp(b"k" * 32, "b"))


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_message_errors(raw: bytes) -> None:
    with contextlib.suppress(MessageError):
        parse_payload(raw)


@SETTINGS
@given(st.sampled_from(sorted(FIELDS)), json_values)
def test_any_json_in_any_field_raises_only_message_errors(
    factory: MessageFactory, field: str, value: Any
) -> None:
    doc = json.dumps({**BASE, field: value})
    try:
        factory.build(parse_payload(doc), now=NOW)
    except MessageError as e:
        assert not e.reason.startswith(f"{e.field}:")


@SETTINGS
@given(st.sampled_from(sorted(FIELDS)), st.integers(min_value=1, max_value=3000))
def test_any_depth_in_any_field_raises_only_message_errors(
    factory: MessageFactory, field: str, depth: int
) -> None:
    nested = "[" * depth + "]" * depth
    doc = json.dumps(BASE)[:-1] + f', "{field}": {nested}}}'
    doc = doc.replace(f'"{field}": "{BASE.get(field)}", ', "") if field in BASE else doc
    try:
        factory.build(parse_payload(doc), now=NOW)
    except MessageError as e:
        if depth + 1 > MAX_JSON_DEPTH:
            assert e.field == "payload"


@SETTINGS
@given(st.sampled_from(["priority", "send_at", "expires_at", "metadata"]), st.integers(20, 6000))
def test_long_integer_literals_name_their_field(
    factory: MessageFactory, field: str, digits: int
) -> None:
    number = "9" * digits
    value = f'{{"n": {number}}}' if field == "metadata" else number
    doc = json.dumps(BASE)[:-1] + f', "{field}": {value}}}'
    with pytest.raises(MessageError) as info:
        factory.build(parse_payload(doc), now=NOW)
    assert info.value.field in (field, f"{field}.n")


@given(json_values)
def test_depth_counts_nesting_not_brackets_in_strings(value: Any) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    assert json_depth(json.dumps(value).encode()) == depth(value)


def test_python_api_numbers_are_ranged_before_conversion(factory: MessageFactory) -> None:
    """Payloads given as dicts (the Python API) hold any int: no OverflowError either."""
    for field, value in (("send_at", 10**400), ("expires_at", -(10**400)), ("priority", 10**5000)):
        with pytest.raises(MessageError) as info:
            factory.build({**BASE, field: value}, now=NOW)
        assert info.value.field == field
    with pytest.raises(MessageError) as info:
        factory.build({**BASE, "metadata": {"n": 10**5000}}, now=NOW)
    assert info.value.field == "metadata.n"


def test_invalid_utf8_names_its_byte_offset() -> None:
    raw = b'{"subject": "ok \xe2\x82"}'
    with pytest.raises(MessageError, match="not valid UTF-8 at byte 16"):
        parse_payload(raw)


@pytest.mark.parametrize(
    ("typed", "refused"),
    [
        ("exa\u200bmple.org", True),  # zero-width space: deleted by the mapping
        ("exa\u2060mple.org", True),  # word joiner
        ("exam\u00adple.org", True),  # soft hyphen
        ("\uff45xample.org", True),  # full-width letter
        ("\ufb01le.example", True),  # ligature
        ("\u2460.example", True),  # circled digit one
        ("bücher.example", False),
        ("BÜCHER.example", False),  # case folding only
        ("bu\u0308cher.example", False),  # NFC only
        ("ΣΊΣΥΦΟΣ.gr", False),
        ("faß.de", False),  # IDNA 2008 keeps ß
        ("例え\u3002テスト", False),  # an IDNA label separator
    ],
)
def test_idna_rewrites_beyond_case_and_nfc_are_refused(typed: str, refused: bool) -> None:
    assert (idna_rewrite(typed) is not None) is refused


blank_runs = st.lists(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)
    | st.integers(1, 3000).map(lambda n: " " * n)
    | st.just("\t"),
    min_size=1,
    max_size=12,
).map("".join)


@SETTINGS
@given(blank_runs, blank_runs)
def test_no_header_line_over_998_octets_whatever_the_values(
    factory: MessageFactory, subject: str, note: str
) -> None:
    """Issue 10, finding 7: checked on the rendered bytes (the factory asserts it too)."""
    payload = {**BASE, "subject": subject[:998], "headers": {"X-Note": note[:8000]}}
    try:
        msg = factory.build(payload, now=NOW)
    except MessageError as e:
        assert "header line would be" not in e.reason, e  # rendering must fold it
        return
    head = msg.body.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 998


def test_an_account_sends_only_from_its_own_or_listed_pools(tmp_path: Path) -> None:
    """Issue 10, finding 5: `pool` was only checked to exist."""
    from dispatcher.config import ConfigError

    accounts = [
        {"name": "acme", "author_domains": ["acme-news.example"], "pool": "warm"},
        {
            "name": "creator",
            "author_domains": ["creator-letters.example"],
            "pool": "warm",
            "pools": ["dedicated"],
        },
    ]
    f = MessageFactory.from_config(corpus_config(tmp_path, accounts=accounts), Verp(b"k" * 32, "b"))
    creator = {**BASE, "account": "creator", "from": "x@creator-letters.example"}
    assert f.build({**creator, "pool": "dedicated"}, now=NOW).pool == "dedicated"
    assert f.build({**creator, "pool": "warm"}, now=NOW).pool == "warm"
    assert f.build(creator, now=NOW).pool == "warm"
    with pytest.raises(MessageError) as info:
        f.build({**BASE, "pool": "dedicated"}, now=NOW)
    assert (info.value.field, info.value.code) == ("pool", "pool_not_allowed")
    assert str(info.value) == "pool: account 'acme' may not send from pool 'dedicated'"

    bad = [{**accounts[1], "pools": ["dedicated", "nope"]}]
    with pytest.raises(ConfigError) as cfg:
        corpus_config(tmp_path, accounts=bad)
    assert cfg.value.key_path == "accounts[0].pools[1]"
