"""Webhook endpoints: what an account registers (`EndpointDoc`), what the sender keeps
(`EndpointState`), and the checks on an endpoint's address.

Both documents are stored as JSON beside the endpoint (queues/webhooks.py); the API writes
only the doc, the sender only the state. A replay is a request in the doc (`replay_from`,
numbered by `replay_n`) that the sender carries out and acknowledges in its state.
"""

from __future__ import annotations

import ipaddress
import uuid
from urllib.parse import urlsplit

import msgspec

from dispatcher.errors import InvalidInput
from queues.webhooks import WebhookRecord

# Event types an endpoint may ask for ("message.*" is every message event).
EVENT_TYPES = (
    "message.delivered",
    "message.deferred",
    "message.bounced",
    "message.failed",
    "message.ambiguous",
    "message.suppressed",
    "message.cancelled",
)
MAX_URL = 2048


class WebhookInputError(InvalidInput):
    """A registration is refused; `field` names the input at fault."""

    code = "invalid_webhook"


class EndpointDoc(msgspec.Struct, forbid_unknown_fields=False):
    event_types: list[str]
    batch_size: int
    secrets: list[str]  # sealed (SecretBox), newest first
    start: int  # the outbox position at registration: only later events are sent
    replay_from: int | None = None
    replay_n: int = 0


class Batch(msgspec.Struct):
    """A batch frozen at its first attempt: resent byte for byte under the same id."""

    id: str
    body: str
    last_seq: int
    count: int
    first_at: float


class EndpointState(msgspec.Struct, forbid_unknown_fields=False):
    position: int = -1  # -1: not started (take the doc's start)
    batch: Batch | None = None
    attempts: int = 0
    next_at: float = 0.0
    failing: bool = False
    disabled: str | None = None
    last_status: int | None = None
    last_error: str | None = None
    replay_n: int = 0
    delivered_batches: int = 0
    delivered_events: int = 0


def new_webhook_id() -> str:
    return "wh_" + uuid.uuid4().hex


def new_batch_id() -> str:
    return "msg_" + uuid.uuid4().hex


def doc_of(record: WebhookRecord) -> EndpointDoc:
    return msgspec.json.decode(record.doc, type=EndpointDoc)


def state_of(record: WebhookRecord) -> EndpointState:
    return msgspec.json.decode(record.state or "{}", type=EndpointState)


def encode(obj: msgspec.Struct) -> str:
    return msgspec.json.encode(obj).decode()


def check_url(url: str, *, allow_private: bool) -> str:
    """An http(s) URL with a host; a literal address must be public unless allowed
    (names are checked again at every connection: see `check_address`)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise WebhookInputError(
            field="url", reason=f"expected an http(s) URL of at most {MAX_URL} characters"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise WebhookInputError(
            field="url", reason="expected an http:// or https:// URL with a host"
        )
    if parts.username or parts.password:
        raise WebhookInputError(field="url", reason="credentials in the URL are not allowed")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise WebhookInputError(field="url", reason="not a valid port") from None
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return url
    if not allow_private and not is_public(address):
        raise WebhookInputError(
            field="url", reason="the address is loopback, private or link-local"
        )
    return url


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Not loopback, private, link-local, multicast, reserved or unspecified."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_types(types: list[str] | None) -> list[str]:
    if types is None:
        return list(EVENT_TYPES)
    if not isinstance(types, list) or not types:
        raise WebhookInputError(
            field="event_types", reason="expected a non-empty list of event types"
        )
    out: list[str] = []
    for t in types:
        if t == "message.*":
            out.extend(EVENT_TYPES)
        elif t in EVENT_TYPES:
            out.append(t)
        else:
            raise WebhookInputError(field="event_types", reason=f"unknown event type {t!r}")
    return sorted(set(out))


def wanted(doc: EndpointDoc, kind: str) -> bool:
    return kind in doc.event_types
