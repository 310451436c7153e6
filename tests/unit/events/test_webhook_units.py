"""Webhook pieces without the network: secrets sealed under rotating KEKs, signatures the
Standard Webhooks reference library accepts, Retry-After, and URL checks."""

from __future__ import annotations

import datetime
import email.utils
import ipaddress
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from dispatcher.events.secrets import SecretBox, SecretError, new_secret
from dispatcher.events.sender import retry_after
from dispatcher.events.signing import headers
from dispatcher.events.webhooks import WebhookInputError, check_types, check_url, is_public

OLD = "o" * 40
NEW = "n" * 40


def test_secrets_survive_kek_rotation_and_stay_bound_to_their_endpoint() -> None:
    secret = new_secret()
    sealed_old = SecretBox((OLD,)).seal(secret, "wh_1")
    assert secret not in sealed_old
    rotated = SecretBox((NEW, OLD))
    assert rotated.open(sealed_old, "wh_1") == secret  # the old KEK still decrypts
    sealed_new = rotated.seal(secret, "wh_1")
    assert SecretBox((NEW,)).open(sealed_new, "wh_1") == secret  # new KEK first
    with pytest.raises(SecretError):
        SecretBox((NEW,)).open(sealed_old, "wh_1")  # old KEK dropped
    with pytest.raises(SecretError):
        rotated.open(sealed_new, "wh_2")  # moved to another endpoint
    with pytest.raises(SecretError):
        SecretBox(()).seal(secret, "wh_1")


@given(text=st.text(max_size=500), msg=st.text(min_size=1, max_size=40))
def test_signatures_verify_with_the_reference_library(text: str, msg: str) -> None:
    body = json.dumps({"type": "message.events", "t": text}).encode()
    secret, other = new_secret(), new_secret()
    msg_id = "msg_" + "".join(c for c in msg if c.isascii() and c.isalnum())
    ts = int(time.time())
    h = headers([secret, other], msg_id, ts, body)  # two secrets during a rotation
    for s in (secret, other):
        Webhook(s).verify(body, h)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, h)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"events", b"evente"), h)
    stale = headers([secret], msg_id, ts - 600, body)  # a resend must be re-signed
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, stale)


def test_retry_after_seconds_and_dates() -> None:
    now = time.time()
    assert retry_after("120", now) == 120
    when = email.utils.format_datetime(
        datetime.datetime.fromtimestamp(now + 60, datetime.UTC), usegmt=True
    )
    got = retry_after(when, now)
    assert got is not None and 58 <= got <= 61
    assert retry_after("soon", now) is None and retry_after(None, now) is None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/h", "http://10.1.2.3/h", "http://[::1]/h", "http://169.254.169.254/",
     "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://192.168.1.1/"],
)  # fmt: skip
def test_private_literal_addresses_refused_unless_allowed(url: str) -> None:
    with pytest.raises(WebhookInputError) as e:
        check_url(url, allow_private=False)
    assert e.value.field == "url"
    assert check_url(url, allow_private=True) == url


def test_urls_and_types() -> None:
    assert check_url("https://hooks.example.com/x?y=1", allow_private=False)
    for bad in ("", "ftp://a.example/", "https:///x", "https://u:p@a.example/", "x" * 3000):
        with pytest.raises(WebhookInputError):
            check_url(bad, allow_private=True)
    assert is_public(ipaddress.ip_address("8.8.8.8"))
    assert "message.bounced" in check_types(["message.*"])
    assert check_types(["message.bounced"]) == ["message.bounced"]
    with pytest.raises(WebhookInputError):
        check_types([])
