"""The `Queue` protocol: where mail waits, and the types every backend shares.

A backend stores messages (already rendered to RFC 5322 bytes at enqueue), hands them out in
batches under a fenced worker lease, grants the `committing` mark as a compare-and-set on
(message, worker, epoch), and applies outcomes in batches under the same check.
Times are POSIX seconds (float) throughout.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from queues.errors import IdempotencyConflict, InvalidQueueInput

if TYPE_CHECKING:
    from queues.accounts import (
        Account,
        AccountSeed,
        AccountStatus,
        ApiKey,
        KeyScope,
        NewApiKey,
    )
    from queues.deliverability import ClaimSkip, WarmupRecord
    from queues.suppressions import Suppression
    from queues.webhooks import WebhookRecord

# How long a worker whose heartbeat stopped keeps its messages (seconds); `[queue] lease_ttl`.
DEFAULT_LEASE_TTL = 30.0


class MessageState(enum.StrEnum):
    """States as in DESIGN.md, "Message states"."""

    QUEUED = "queued"
    SENDING = "sending"
    COMMITTING = "committing"
    DEFERRED = "deferred"  # waiting for its retry time; claimable again once due
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset(
    {
        MessageState.DELIVERED,
        MessageState.BOUNCED,
        MessageState.FAILED,
        MessageState.AMBIGUOUS,
        MessageState.SUPPRESSED,
        MessageState.CANCELLED,
    }
)
# States an outcome write may set. `queued` is for "not sendable now" (no attempt counted).
OUTCOME_STATES = frozenset(
    {
        MessageState.QUEUED,
        MessageState.DEFERRED,
        MessageState.DELIVERED,
        MessageState.BOUNCED,
        MessageState.FAILED,
        MessageState.AMBIGUOUS,
        MessageState.SUPPRESSED,
    }
)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A validated, rendered message ready to be stored.

    `body` is the RFC 5322 message (CRLF line ends, no DKIM-Signature yet).
    `verp_token` identifies the message in the envelope sender's local part; the platform
    domain after `@` is chosen per attempt by the pools.
    """

    id: str
    account: str
    idempotency_key: str
    payload_hash: str
    author_domain: str
    rcpt: str
    rcpt_domain: str
    verp_token: str
    message_id: str
    body: bytes
    stream: str = "transactional"
    priority: int = 0
    campaign: str | None = None
    pool: str | None = None
    due_at: float = 0.0
    expires_at: float | None = None
    smtputf8: bool = False
    # The caller's own data (a JSON object as text), kept and shown with the message.
    metadata: str | None = None


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """`created` is False when an identical earlier enqueue was found (deduplicated)."""

    id: str
    _: KW_ONLY
    created: bool


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's lease: every claim carries it, every later write is fenced by it."""

    worker_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """A message handed to a worker under `lease`; state is `sending`."""

    id: str
    account: str
    author_domain: str
    rcpt: str
    rcpt_domain: str
    verp_token: str
    message_id: str
    body: bytes
    stream: str
    priority: int
    campaign: str | None
    pool: str | None
    attempts: int
    enqueued_at: float
    expires_at: float | None
    smtputf8: bool
    lease: Lease
    # The route key (ip_pools provider or MX site) stored once a worker routed it.
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """The result of one attempt (or a decision not to attempt).

    `state` is one of OUTCOME_STATES. `counts_attempt` is False for "not sendable now"
    (returned to the queue without an attempt). `retry_at` is required for `deferred`
    and `queued`. `category` is the reply's category (ip_pools.categories), None for a
    delivery or a message never attempted.

    `provider` (the route key) is stored with the message once known, also for a message
    returned without an attempt, so that claims can skip providers that cannot take mail.
    Every outcome that counts an attempt is written to the attempt log in the same batch (at
    `attempted_at`, default the write time, with `tls`); one with a source IP and a provider
    also counts in the daily counts of (source IP, provider, UTC day).
    """

    id: str
    state: MessageState
    counts_attempt: bool = True
    retry_at: float | None = None
    reply_code: int | None = None
    reply_text: str | None = None
    source_ip: str | None = None
    platform_domain: str | None = None
    mx_host: str | None = None
    category: str | None = None
    provider: str | None = None
    tls: bool | None = None
    attempted_at: float | None = None


# Events are kept at least this long whatever the messages' retention: the webhook retry
# horizon (about 76 hours) and a margin, so a consumer that was down can still catch up.
EVENT_RETENTION = 4 * 86400.0

# Outcome states that raise an event (`message.<state>`); `queued` is no attempt (released,
# not yet admitted) and raises none.
EVENT_STATES = OUTCOME_STATES - {MessageState.QUEUED}


@dataclass(frozen=True, slots=True)
class Event:
    """A row of the event outbox.

    Outcome events (`message.delivered`, `message.deferred`, ...) are made by the backend from
    the outcomes it applies, in the same transaction. Other events (deliverability: `ip.paused`,
    `ip.slowed`, `config.reloaded`, ...) are handed to `record_outcomes` with a batch, or to
    `append_events` by commands. `data` is a JSON object. `seq` is set once stored (it grows
    with every row; under PostgreSQL a row may commit after a larger one).
    """

    kind: str
    at: float
    data: Mapping[str, object] = field(default_factory=dict)
    message_id: str | None = None
    account: str | None = None
    seq: int = 0
    # Read with the event (joined from the message, not stored twice): its campaign and the
    # caller's metadata (a JSON object's text), for consumers.
    campaign: str | None = None
    metadata: str | None = None

    @property
    def id(self) -> str:
        """The event's unique id (from its seq): consumers deduplicate by it."""
        return f"ev_{self.seq}"


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What a recovery pass did with the messages of dead or expired workers."""

    workers: int = 0
    requeued: int = 0
    ambiguous: int = 0


@dataclass(frozen=True, slots=True)
class StatusCounts:
    """Counts for `maildispatch status`."""

    # Messages without a pool (or never attempted, so without a source IP) are counted in
    # `by_state` only.
    by_state: dict[str, int] = field(default_factory=dict)
    by_pool: dict[str, dict[str, int]] = field(default_factory=dict)
    by_source_ip: dict[str, dict[str, int]] = field(default_factory=dict)


class HeldReason:
    """Why a message is held (`ambiguous`); the same words on every backend."""

    NO_REPLY = "no_reply"  # its dot was written and no reply came (lost link, timeout, shutdown)
    WORKER_LOST = "recovered_ambiguous"  # its worker died after the committing mark


# The reply text recovery gives a message it holds.
WORKER_LOST_TEXT = "no reply: worker lost after the committing mark"


@dataclass(frozen=True, slots=True)
class HeldFilter:
    """Which held messages an operator means; every field narrows (None: any).

    `held_before`: held at or before this time (`--older-than`). `ids`: exactly these.
    """

    account: str | None = None
    campaign: str | None = None
    stream: str | None = None
    held_before: float | None = None
    ids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """One held message: who it was for, why it is held and since when."""

    id: str
    account: str
    campaign: str | None
    stream: str
    rcpt: str
    attempts: int
    reason: str  # a HeldReason value
    reply_code: int | None
    reply_text: str | None
    held_at: float
    source_ip: str | None
    mx_host: str | None
    resends: int  # deliberate resends so far (held and released)


# How an operator may settle a held message without sending it.
RESOLVE_STATES = frozenset({MessageState.DELIVERED, MessageState.FAILED})


def resolve_state(state: object) -> MessageState:
    """`state` as a MessageState in RESOLVE_STATES, else InvalidQueueInput naming `state`."""
    for st in RESOLVE_STATES:
        if state == st.value:
            return st
    raise InvalidQueueInput(field="state", reason=f"must be delivered or failed, got {state!r}")


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message's stored state, for status, tests and the chaos checker."""

    id: str
    account: str
    idempotency_key: str
    state: MessageState
    attempts: int
    rcpt: str
    last_reply_code: int | None
    last_reply_text: str | None
    source_ip: str | None
    platform_domain: str | None
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class MessageView:
    """One message as reported to its account (API, status): state, times, last reply."""

    id: str
    account: str
    idempotency_key: str
    state: MessageState
    attempts: int
    rcpt: str
    stream: str
    campaign: str | None
    metadata: str | None  # JSON text as enqueued
    enqueued_at: float
    updated_at: float
    due_at: float | None  # while waiting (queued, deferred)
    expires_at: float | None
    last_reply_code: int | None
    last_reply_text: str | None
    source_ip: str | None
    platform_domain: str | None
    mx_host: str | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One delivery attempt of a message, as the attempt log recorded it (with its outcome,
    in the outcome's batch): the history a support person needs."""

    at: float
    state: MessageState
    source_ip: str | None
    platform_domain: str | None
    mx_host: str | None
    tls: bool | None
    reply_code: int | None
    reply_text: str | None
    category: str | None
    provider: str | None = None


@runtime_checkable
class Queue(Protocol):
    """What every backend provides. All methods are coroutines; none blocks the loop.

    A store that cannot be reached raises `QueueUnavailable` (`QueueTimeout` when it did not
    answer in time); the engine pauses claims on it and keeps outcomes buffered.
    """

    # A worker whose heartbeat stops this long loses its messages to recovery; the engine
    # renews well within it.
    lease_ttl: float

    async def open(self) -> None:
        """Create or migrate the schema as needed and open connections."""

    async def close(self) -> None:
        """Release connections and this process's worker locks."""

    async def enqueue_many(self, messages: Sequence[NewMessage]) -> list[EnqueueResult]:
        """Store messages atomically per message; dedupe by (account, idempotency_key).

        Same key and payload_hash returns the original id with created=False; a different
        payload raises IdempotencyConflict for that message and stores none of the batch.
        """

    async def enqueue_each(
        self, messages: Sequence[NewMessage]
    ) -> list[EnqueueResult | IdempotencyConflict]:
        """Like enqueue_many in one transaction, but a message whose key conflicts (with a
        stored key or an earlier message of the batch) gets its IdempotencyConflict as its
        result and the others are stored."""

    async def register_worker(self) -> Lease:
        """Register this worker and return its lease (a fresh, larger epoch)."""

    async def heartbeat(self, lease: Lease) -> bool:
        """Renew the lease; False when it was taken over (the worker must stop)."""

    async def live_workers(self, now: float) -> int:
        """How many registered workers hold a live lease at `now` (the worker registry:
        processes that count limits locally divide them by it)."""

    async def claim(
        self, lease: Lease, limit: int, now: float, skip: Sequence[ClaimSkip] = ()
    ) -> list[ClaimedMessage]:
        """Claim up to `limit` due messages (queued or deferred with due_at <= now),
        ordered by priority (higher first) then due time; they become `sending`.
        Messages whose stored provider matches a `skip` entry are left waiting."""

    async def release_unheld(self, lease: Lease, held: Sequence[str]) -> int:
        """Requeue the `sending` messages of `lease` not in `held`; returns how many.

        For a worker whose claim raised `QueueUnavailable`: the claim may have committed
        with its reply lost, leaving messages `sending` under a lease that stays alive (so
        recovery never takes them). Not an attempt; `committing` ones are left alone."""

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 (a poll period)
        """Sleep until new work may be due, at most `timeout` seconds (the poll fallback).

        May return early (PostgreSQL: a notification from an enqueue or recovery on any
        node, or at once after its listener reconnected); never raises for an outage."""

    async def mark_committing(self, lease: Lease, ids: Sequence[str]) -> set[str]:
        """Compare-and-set `sending` -> `committing` for messages held under `lease`.

        Returns the ids granted; durable before it returns. A worker whose lease was
        taken over gets an empty set and must not write the final dot."""

    async def record_outcomes(
        self, lease: Lease, outcomes: Sequence[OutcomeRecord], events: Sequence[Event] = ()
    ) -> int:
        """Apply outcomes of messages held under `lease` (fenced); returns how many applied.

        In the same transaction: one `message.<state>` event per applied outcome whose state
        is in EVENT_STATES (none for a fenced-off one), and `events` (written even when the
        lease was lost: they are about the sender, not the messages)."""

    async def append_events(self, events: Sequence[Event]) -> None:
        """Store events in one transaction (commands: pause, resume, reload...)."""

    async def read_events(self, after: int, limit: int) -> list[Event]:
        """Stored events with seq > `after`, in seq order, at most `limit`, with their
        message's campaign and metadata. Under PostgreSQL a row may still commit later
        with a smaller seq than one returned: consumers that keep a position use
        `read_settled_events`."""

    async def read_settled_events(self, after: int, limit: int) -> list[Event]:
        """Like `read_events`, but positions are safe to resume from: no event with a
        smaller seq than one returned can appear later (PostgreSQL returns rows only up
        to the first one whose transaction is not older than every running one, in any
        database of the cluster; SQLite's single writer commits in seq order)."""

    async def last_event_seq(self) -> int:
        """The largest stored event seq (0 when there is none)."""

    async def recover(
        self, now: float, ambiguous_policy: Mapping[str, str] | None = None
    ) -> RecoveryReport:
        """Take over the messages of dead workers: `sending` back to `queued`, `committing`
        to `ambiguous` (or per stream policy: "retry" requeues). Safe to run concurrently.
        A message made ambiguous raises its `message.ambiguous` event in the same
        transaction."""

    async def counts(self) -> StatusCounts:
        """Counts per state, per pool and per source IP."""

    async def next_due(self) -> float | None:
        """Earliest due time among queued/deferred messages, None when nothing waits."""

    async def active_count(self) -> int:
        """Messages not yet terminal (queued, deferred, sending, committing)."""

    async def get(self, ids: Sequence[str]) -> list[MessageRecord]:
        """Stored records of the given ids (missing ids are left out)."""

    async def prune(
        self, now: float, retention: float, idempotency_retention: float
    ) -> tuple[int, int]:
        """Drop terminal messages last updated before `now - retention`, in small batches
        (events, the attempt log and daily counts older than that too), and idempotency keys
        created before `now - idempotency_retention` (keys are kept for their own retention,
        so pruning a message never reopens its key).
        Returns (messages dropped, keys dropped)."""

    async def cancel(self, account: str, campaign: str | None = None) -> int:
        """Queued and deferred messages of `account` (only of `campaign` when given)
        become `cancelled`, each with a `message.cancelled` event, in batches of a few
        thousand per transaction (a million never hold a lock for long); returns how many.
        A campaign's cancel is remembered: a message of it enqueued before the cancel and
        being sent meanwhile has its committing mark refused and is settled `cancelled`."""

    # -- deliverability (types in queues/deliverability.py) --------------------------------

    async def daily_counts(self, day: int) -> dict[tuple[str, str], int]:
        """What each (source IP, provider) was counted for on UTC day `day`."""

    async def warmup_progress(self) -> list[WarmupRecord]:
        """Every IP's stored warmup progress."""

    async def save_warmup_progress(self, records: Sequence[WarmupRecord]) -> None:
        """Insert or replace the progress of these IPs (one transaction)."""

    async def attempt_counts(self, since: float) -> dict[tuple[str, str], int]:
        """Attempts per (source IP, provider) logged at or after `since` (recent rates)."""

    async def ping(self) -> None:
        """Answer when the store answers (readiness); raises when it does not."""

    # -- held mail (ambiguous) -----------------------------------------------------------

    async def held(self, which: HeldFilter, limit: int = 1000) -> list[HeldMessage]:
        """Held messages matching `which`, longest held first, at most `limit`."""

    async def held_count(self) -> int:
        """How many messages are held (cheap: an index serves it)."""

    async def release_held(self, which: HeldFilter, now: float) -> int:
        """Held messages matching `which` are queued again, due `now`, each counted as a
        deliberate resend (`resends` + 1, a `message.released` event); returns how many."""

    async def resolve_held(self, which: HeldFilter, state: MessageState, now: float) -> int:
        """Held messages matching `which` are settled as `state` (one of RESOLVE_STATES)
        without sending (a `message.resolved` event); returns how many."""

    # -- accounts and API keys (types in queues/accounts.py) ------------------------------

    async def seed_accounts(self, seeds: Sequence[AccountSeed]) -> list[str]:
        """Insert the config-declared accounts that are absent (id = config name), trusted
        and marked config-seeded; an existing one (by id or name) is left untouched.
        Returns the ids inserted. Safe to run concurrently and on every start."""

    async def create_account(
        self,
        name: str,
        *,
        author_domains: Sequence[str] = (),
        pool: str | None = None,
        trusted: bool = False,
        account_id: str | None = None,
    ) -> Account:
        """A new account with a fresh immutable id; AccountExists when the name is taken."""

    async def get_account(self, account_id: str) -> Account | None:
        """The account with this id."""

    async def find_account(self, ref: str) -> Account | None:
        """The account with this id, else the one with this name."""

    async def list_accounts(self, *, after: str | None = None, limit: int = 100) -> list[Account]:
        """Accounts in id order, after the id `after` (a cursor)."""

    async def rename_account(self, account_id: str, name: str) -> Account:
        """Change the name (the id stays); AccountNotFound, AccountExists."""

    async def set_account_status(self, account_id: str, status: AccountStatus) -> Account:
        """Pause or resume an account; AccountNotFound."""

    async def create_api_key(
        self, account_id: str, scope: KeyScope | str, label: str = ""
    ) -> NewApiKey:
        """A new key; only its hash is stored, the token is returned this once."""

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        """The stored key (hash included) with this id, revoked or not."""

    async def list_api_keys(self, account_id: str) -> list[ApiKey]:
        """Every key of the account, oldest first."""

    async def revoke_api_key(self, account_id: str, key_id: str) -> bool:
        """Revoke one key of the account; False when it has no such active key."""

    # -- webhook endpoints (queues/webhooks.py) ------------------------------------------

    async def save_webhook(self, record: WebhookRecord) -> None:
        """Insert an endpoint, or replace its url and doc (its state is left alone)."""

    async def save_webhook_state(self, webhook_id: str, state: str) -> None:
        """The sender's state of one endpoint (JSON text)."""

    async def list_webhooks(
        self, account: str | None = None, webhook_id: str | None = None
    ) -> list[WebhookRecord]:
        """Endpoints, of one account and/or with one id when given, ordered by id."""

    # -- reports to an account --------------------------------------------------------------

    async def describe(self, ids: Sequence[str]) -> list[MessageView]:
        """Views of the given ids, live or finished, in the order asked (missing left out)."""

    async def list_messages(
        self,
        account: str,
        *,
        campaign: str | None = None,
        state: MessageState | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> list[MessageView]:
        """The account's messages, newest first (ids are time-ordered), with ids below
        `before` (the cursor: the last id of the previous page)."""

    async def attempts(self, ids: Sequence[str]) -> dict[str, list[AttemptRecord]]:
        """Attempts per message id, oldest first (ids without attempts map to [])."""

    # -- suppression lists (queues/suppressions.py) ---------------------------------------

    async def put_suppressions(self, entries: Sequence[Suppression]) -> int:
        """Add or replace entries (checked by make_suppression) in one transaction; how
        many. Waiting messages to those addresses are settled when claimed."""

    async def get_suppression(self, account: str, address: str) -> Suppression | None:
        """The account's entry for the (normalized) address, else the platform-wide one."""

    async def delete_suppression(self, account: str, address: str) -> bool:
        """Remove the account's own entry; False when it had none."""

    async def list_suppressions(
        self, account: str, *, after: str | None = None, limit: int = 1000
    ) -> list[Suppression]:
        """The account's entries (PLATFORM: the platform-wide list) in address order, after
        the address `after` (a cursor)."""
