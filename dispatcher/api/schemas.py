"""The API's documents as msgspec Structs: encoded fast, and the source of the OpenAPI
schemas. The message payload itself is read and checked by `dispatcher.message.intake`
(the same rules as the CLI and the Python API); `MessageIn` only documents it."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec

from dispatcher.api.problems import Problem

Timestamp = dt.datetime


def when(t: float | None) -> dt.datetime | None:
    """POSIX seconds as an aware UTC datetime (RFC 3339 on the wire)."""
    return None if t is None else dt.datetime.fromtimestamp(t, tz=dt.UTC)


class Unsubscribe(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    url: str | None = None
    mailto: str | None = None


class MessageIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One message to send (the enqueue JSON). `account` may be left out: the key's."""

    to: str
    subject: str
    from_: str = msgspec.field(name="from")
    text: str | None = None
    html: str | None = None
    account: str | None = None
    idempotency_key: str | None = None
    reply_to: str | None = None
    headers: dict[str, str] | None = None
    stream: Literal["transactional", "broadcast"] | None = None
    priority: int | None = None
    campaign: str | None = None
    send_at: str | float | None = None
    expires_at: str | float | None = None
    unsubscribe: Unsubscribe | None = None
    metadata: dict[str, Any] | None = None
    pool: str | None = None


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    messages: list[MessageIn]


class Accepted(msgspec.Struct):
    """A message stored (or found stored under the same Idempotency-Key and payload)."""

    id: str
    account: str
    idempotency_key: str
    status: Literal["accepted"]
    metadata: dict[str, Any] | None


class ItemResult(msgspec.Struct, omit_defaults=True):
    index: int
    status: Literal["accepted", "duplicate", "failed"]
    id: str | None = None
    error: Problem | None = None


class BatchOut(msgspec.Struct):
    accepted: int
    duplicates: int
    failed: int
    results: list[ItemResult]


class Reply(msgspec.Struct):
    code: int | None
    text: str | None


class AttemptOut(msgspec.Struct):
    at: Timestamp
    outcome: str
    source_ip: str | None
    platform_domain: str | None
    mx_host: str | None
    tls: bool | None
    reply: Reply
    category: str | None


class MessageOut(msgspec.Struct):
    id: str
    account: str
    idempotency_key: str
    state: str
    rcpt: str
    stream: str
    campaign: str | None
    metadata: dict[str, Any] | None
    attempt_count: int
    enqueued_at: Timestamp
    updated_at: Timestamp
    due_at: Timestamp | None
    expires_at: Timestamp | None
    last_reply: Reply | None
    source_ip: str | None
    platform_domain: str | None
    attempts: list[AttemptOut] | None = None


class MessagePage(msgspec.Struct):
    data: list[MessageOut]
    next_cursor: str | None


class AccountIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    author_domains: list[str] = []
    pool: str | None = None
    trusted: bool = False


class AccountPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str | None = None
    status: Literal["active", "paused"] | None = None


class AccountOut(msgspec.Struct):
    id: str
    name: str
    status: str
    trusted: bool
    config_seeded: bool
    author_domains: list[str]
    pool: str | None
    created_at: Timestamp
    updated_at: Timestamp


class AccountPage(msgspec.Struct):
    data: list[AccountOut]
    next_cursor: str | None


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    scope: Literal["send", "full"] = "send"
    label: str = ""


class KeyOut(msgspec.Struct):
    id: str
    account_id: str
    scope: str
    label: str
    created_at: Timestamp
    revoked_at: Timestamp | None


class NewKeyOut(msgspec.Struct):
    """`token` is shown this once; only its hash is stored."""

    id: str
    account_id: str
    scope: str
    label: str
    created_at: Timestamp
    token: str


class KeyList(msgspec.Struct):
    data: list[KeyOut]


class Health(msgspec.Struct):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


SuppressionReasonName = Literal["hard_bounce", "complaint", "unsubscribe", "manual"]


class SuppressionIn(msgspec.Struct, forbid_unknown_fields=True):
    """`PUT /v1/suppressions/{address}`: why, and where it came from (free text)."""

    reason: SuppressionReasonName = "manual"
    source: str = "api"


class SuppressionItem(msgspec.Struct, forbid_unknown_fields=True):
    """One entry of a bulk import."""

    address: str
    reason: SuppressionReasonName = "manual"
    source: str = "import"


class SuppressionImport(msgspec.Struct, forbid_unknown_fields=True):
    suppressions: list[SuppressionItem]


class SuppressionOut(msgspec.Struct):
    """`scope` is `account` (the account's own list) or `platform` (the platform-wide
    hard-bounce list, which applies to every account)."""

    address: str
    reason: str
    source: str
    scope: Literal["account", "platform"]
    created_at: Timestamp


class SuppressionPage(msgspec.Struct):
    data: list[SuppressionOut]
    next_cursor: str | None


class Imported(msgspec.Struct):
    imported: int


class Cancelled(msgspec.Struct):
    """How many waiting messages of the campaign were cancelled."""

    campaign: str
    cancelled: int


class WebhookIn(msgspec.Struct, forbid_unknown_fields=True):
    """An endpoint to register; `account` only with the admin key (else the key's)."""

    url: str
    event_types: list[str] | None = None
    batch_size: int = 100
    account: str | None = None


class WebhookOut(msgspec.Struct):
    """An endpoint and how its deliveries go (`failing`: failed attempts in a row)."""

    id: str
    account_id: str
    url: str
    event_types: list[str]
    batch_size: int
    created_at: Timestamp
    position: int
    pending_batch: str | None
    attempts: int
    failing: bool
    disabled: str | None
    last_status: int | None
    last_error: str | None
    next_attempt_at: Timestamp | None
    delivered_batches: int
    delivered_events: int
    secret: str | None = None  # shown once, when made


class ReplayOut(msgspec.Struct):
    id: str
    replay_from: int
