"""`PostgresQueue`: the durable queue on PostgreSQL (asyncpg), for one or many nodes.

Schema: see migrations/0001_initial.sql. `open()` refuses a database whose schema is not
exactly the version this code knows (SchemaMismatch): schema changes are deliberate, run
by `maildispatch db migrate`, never a side effect of starting a worker on some node.

Every batch write is one statement (arrays through unnest), so the round trips per batch
are fixed: claim 1, mark_committing 1, record_outcomes 1; enqueue_many a few per 20,000
messages (see enqueue.py). `round_trips` counts them.

Lease times (expiry, heartbeat) are wall-clock seconds of the calling host, as every other
time in the protocol; nodes need synchronized clocks (NTP), skew well below `lease_ttl`.

Outages: every method raises QueueUnavailable (a ConnectionError; QueueTimeout when the
server did not answer in time) instead of hanging, and the pool reconnects on the next call
once the server is back. Repeating a call after QueueUnavailable is safe for enqueue_many
(deduplicated by key), mark_committing (grants again what it granted), record_outcomes
(fenced: an outcome already applied is not applied twice), heartbeat and the reads. A claim
whose reply was lost leaves its messages `sending` under the live lease: release_unheld()
hands them back once the server answers again.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence

import asyncpg

from queues.accounts import (
    HOLD_OFFSET,
    Account,
    AccountSeed,
    AccountStatus,
    ApiKey,
    KeyScope,
    NewApiKey,
)
from queues.deliverability import ClaimSkip, WarmupRecord, utc_day
from queues.errors import (
    IdempotencyConflict,
    InvalidQueueInput,
    LeaseLost,
    QueueTimeout,
    QueueUnavailable,
)
from queues.postgres.accounts import Accounts
from queues.postgres.batches import event_params, outcome_params
from queues.postgres.connection import Database
from queues.postgres.enqueue import enqueue_each, enqueue_many
from queues.postgres.heartbeat import HeartbeatConnection
from queues.postgres.listener import WorkListener
from queues.postgres.migrate import applied_versions, check_applied
from queues.postgres.sql import DELIVERABILITY_QUERIES as _D
from queues.postgres.sql import QUERIES, REPORT_QUERIES, SUPPRESSION_QUERIES
from queues.postgres.webhooks import Webhooks
from queues.protocol import (
    DEFAULT_LEASE_TTL,
    EVENT_RETENTION,
    AttemptRecord,
    ClaimedMessage,
    EnqueueResult,
    Event,
    HeldFilter,
    HeldMessage,
    Lease,
    MessageRecord,
    MessageState,
    MessageView,
    NewMessage,
    OutcomeRecord,
    RecoveryReport,
    StatusCounts,
    resolve_state,
)
from queues.suppressions import Suppression, SuppressionReason
from queues.webhooks import WebhookRecord

# Rows per statement: big enough that a broadcast takes few round trips, small enough that
# one statement's arrays (bodies included) stay a few tens of megabytes.
_CHUNK_ROWS = 20_000
_CHUNK_BYTES = 64 * 1024 * 1024
_PRUNE_BATCH = 1000


# Messages cancelled per statement (cancel, purge).
CANCEL_BATCH = 1_000


class PostgresQueue:
    """The Queue protocol on PostgreSQL. One object per process; safe for many nodes.

    `lease_ttl`: a worker whose heartbeat stops for this long loses its messages to
    recovery. `command_timeout` bounds every statement (QueueTimeout after it).
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
    ) -> None:
        if lease_ttl <= 0:
            raise InvalidQueueInput(field="lease_ttl", reason="must be positive")
        self.dsn = dsn
        self._db = Database(
            dsn,
            min_size=min_connections,
            max_size=max_connections,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )
        self.lease_ttl = lease_ttl
        self._listener = WorkListener(dsn, connect_timeout=connect_timeout)
        self._heartbeat = HeartbeatConnection(dsn, connect_timeout=connect_timeout)
        self._worker_prefix = f"{socket.gethostname()}:{os.getpid()}"
        # Expiry of this process's leases as last renewed: heartbeat() knows when it is
        # too late without asking the server.
        self._lease_expiry: dict[Lease, float] = {}
        self._accounts = Accounts(self._db)
        self._webhooks = Webhooks(self._db)

    def __repr__(self) -> str:  # never show the DSN: it may hold a password
        return f"<PostgresQueue round_trips={self.round_trips}>"

    @property
    def round_trips(self) -> int:
        """Statements sent so far (pool and heartbeat connection)."""
        return self._db.round_trips + self._heartbeat.round_trips

    @property
    def listener(self) -> WorkListener:
        """The LISTEN side (started by the first wait_for_work)."""
        return self._listener

    # -- lifetime ----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect; SchemaMismatch unless the schema is exactly the version known here."""
        await self._db.open()
        try:
            async with self._db.connection() as conn:
                applied = await applied_versions(conn.raw)
            check_applied(applied)
        except BaseException:
            await self._db.close()
            raise

    async def close(self) -> None:
        """Hand back this process's leases and close every connection.

        A lease with nothing in flight is deleted; one that still holds messages is
        expired at once, so the next recovery pass (any node) takes them over.
        """
        try:
            for lease in list(self._lease_expiry):
                await self._release(lease)
        except QueueUnavailable:
            pass  # the leases expire by themselves
        finally:
            self._lease_expiry.clear()
            await self._listener.close()
            await self._heartbeat.close()
            await self._db.close()

    async def _release(self, lease: Lease) -> None:
        async with self._db.connection() as conn:
            inflight = await conn.fetchval(QUERIES["lease_inflight"], lease.worker_id, lease.epoch)
            query = "expire_lease" if inflight else "drop_lease"
            await conn.fetch(QUERIES[query], lease.worker_id, lease.epoch)

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 (a poll period)
        """Sleep until an enqueue or recovery announces work, at most `timeout` seconds.

        Returns at once the first time and after the listener reconnects (announcements
        may have been missed); the timeout is the polling fallback. Never raises for an
        outage: the listener reconnects in the background.
        """
        await self._listener.wait(timeout)

    # -- enqueue -----------------------------------------------------------------------

    async def enqueue_many(self, messages: Sequence[NewMessage]) -> list[EnqueueResult]:
        """Store a batch in one transaction; see the Queue protocol and enqueue.py."""
        results = await enqueue_many(self._db, messages)
        return results  # type: ignore[return-value]  # no conflicts without `report`

    async def enqueue_each(
        self, messages: Sequence[NewMessage]
    ) -> list[EnqueueResult | IdempotencyConflict]:
        """One transaction; conflicting messages get their conflict as result."""
        return await enqueue_each(self._db, messages)

    # -- leases ------------------------------------------------------------------------

    async def register_worker(self) -> Lease:
        """A new lease with a fresh epoch from the sequence (larger than any before)."""
        now = time.time()
        worker_id = f"{self._worker_prefix}:{uuid.uuid4().hex[:12]}"
        epoch = await self._db.fetchval(
            QUERIES["register_worker"],
            worker_id,
            now + self.lease_ttl,
            now,
            socket.gethostname(),
            os.getpid(),
        )
        lease = Lease(worker_id, int(epoch))
        self._lease_expiry[lease] = now + self.lease_ttl
        return lease

    async def heartbeat(self, lease: Lease) -> bool:
        """Renew the lease on its own connection.

        False when the lease was taken over, has expired, or could not be renewed before
        its expiry (the worker must stop starting sessions). QueueUnavailable when the
        server cannot be reached but the lease still has time left: try again soon.
        """
        now = time.time()
        deadline = self._lease_expiry.get(lease)
        if deadline is not None and deadline <= now:
            return False
        budget = self._db.command_timeout if deadline is None else deadline - now
        try:
            async with asyncio.timeout(max(budget, 0.001)):
                renewed = await self._heartbeat.renew(
                    lease.worker_id, lease.epoch, now + self.lease_ttl, now
                )
        except (TimeoutError, QueueUnavailable) as e:
            if deadline is not None and time.time() >= deadline:
                return False
            if isinstance(e, QueueUnavailable):
                raise
            raise QueueTimeout("the lease could not be renewed in time") from e
        if renewed is None:
            self._lease_expiry.pop(lease, None)
            return False
        self._lease_expiry[lease] = float(renewed)
        return True

    async def recover(
        self, now: float, ambiguous_policy: Mapping[str, str] | None = None
    ) -> RecoveryReport:
        """Take over the messages of leases expired at `now` (see the `recover` query)."""
        retry_streams = sorted(s for s, p in (ambiguous_policy or {}).items() if p == "retry")
        row = await self._db.fetchrow(QUERIES["recover"], now, retry_streams)
        assert row is not None
        return RecoveryReport(
            workers=row["workers"], requeued=row["requeued"], ambiguous=row["ambiguous"]
        )

    # -- the hot path ------------------------------------------------------------------

    async def claim(
        self, lease: Lease, limit: int, now: float, skip: Sequence[ClaimSkip] = ()
    ) -> list[ClaimedMessage]:
        """Claim up to `limit` due messages (one statement); LeaseLost if the lease is dead."""
        if limit <= 0:
            return []
        wall = time.time()
        providers = [k.provider for k in skip]
        streams = [k.stream for k in skip]
        rows: list[asyncpg.Record] = []
        async with self._db.connection() as conn:
            while len(rows) < limit:
                wanted = limit - len(rows)
                batch = await conn.fetch(
                    QUERIES["claim"],
                    lease.worker_id,
                    lease.epoch,
                    now,
                    wanted,
                    wall,
                    providers,
                    streams,
                )
                if not batch:
                    if not rows and not await conn.fetchval(
                        QUERIES["lease_alive"], lease.worker_id, lease.epoch, wall
                    ):
                        raise LeaseLost(
                            f"lease {lease.worker_id}/{lease.epoch} expired or was taken over"
                        )
                    break
                # Suppressed since enqueue (an unsubscribe during a broadcast): settled, not
                # sent. Fenced by the lease; a crash in between leaves them to recovery.
                settled = set(
                    await conn.fetchval(
                        SUPPRESSION_QUERIES["settle"],
                        [r["id"] for r in batch],
                        lease.worker_id,
                        lease.epoch,
                        wall,
                    )
                )
                rows += [r for r in batch if r["id"] not in settled] if settled else batch
                if not settled or len(batch) < wanted:
                    break  # read again only to replace suppressed ones
        return [
            ClaimedMessage(
                id=r["id"],
                account=r["account"],
                author_domain=r["author_domain"],
                rcpt=r["rcpt"],
                rcpt_domain=r["rcpt_domain"],
                verp_token=r["verp_token"],
                message_id=r["message_id"],
                body=r["body"],
                stream=r["stream"],
                priority=r["priority"],
                campaign=r["campaign"],
                pool=r["pool"],
                attempts=r["attempts"],
                enqueued_at=r["enqueued_at"],
                expires_at=r["expires_at"],
                smtputf8=r["smtputf8"],
                lease=lease,
                provider=r["provider"],
            )
            for r in rows
        ]

    async def release_unheld(self, lease: Lease, held: Sequence[str]) -> int:
        """Requeue `sending` messages of `lease` that are not in `held`; returns how many.

        For the engine after a claim raised QueueUnavailable: the claim may have committed
        with its reply lost, leaving messages `sending` under a lease that stays alive (so
        recovery never takes them). Not an attempt; committing ones are left alone.
        """
        row = await self._db.fetchrow(
            QUERIES["release_unheld"], lease.worker_id, lease.epoch, list(held), time.time()
        )
        assert row is not None
        return int(row["released"])

    async def mark_committing(self, lease: Lease, ids: Sequence[str]) -> set[str]:
        """The fenced `committing` mark, durable (synchronous commit) before it returns."""
        if not ids:
            return set()
        now = time.time()
        async with self._db.connection() as conn, conn.transaction():
            # The final gate: an address suppressed while its message was on the way is
            # refused here and the message settled `suppressed` (no dot, nothing resends); so
            # is the mail of a campaign cancelled while it was on its way (`cancelled`).
            await conn.fetchval(
                SUPPRESSION_QUERIES["settle"], list(ids), lease.worker_id, lease.epoch, now
            )
            await conn.fetchval(
                SUPPRESSION_QUERIES["settle_cancelled"],
                list(ids),
                lease.worker_id,
                lease.epoch,
                now,
            )
            await conn.fetch(
                SUPPRESSION_QUERIES["hold_in_flight"],
                list(ids),
                lease.worker_id,
                lease.epoch,
                HOLD_OFFSET,
                now,
            )
            rows = await conn.fetch(
                QUERIES["mark_committing"], lease.worker_id, lease.epoch, list(ids), now
            )
        return {r["id"] for r in rows}

    async def record_outcomes(
        self, lease: Lease, outcomes: Sequence[OutcomeRecord], events: Sequence[Event] = ()
    ) -> int:
        """Apply outcomes fenced by the lease, with their events and `events`, in one
        asynchronously committed statement."""
        if not outcomes and not events:
            return 0
        ids, by_id = outcome_params(outcomes)
        try:
            applied = await self._db.fetchval(
                QUERIES["record_outcomes"],
                lease.worker_id,
                lease.epoch,
                time.time(),
                ids,
                by_id,
                event_params(events),
            )
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as e:
            # The batch's data, not the server: the caller may split it (nothing written).
            raise InvalidQueueInput(field="outcomes", reason=f"refused by PostgreSQL: {e}") from e
        return int(applied)

    async def append_events(self, events: Sequence[Event]) -> None:
        """Store events in one statement."""
        if events:
            await self._db.fetch(QUERIES["append_events"], event_params(events))

    async def last_event_seq(self) -> int:
        """The largest stored event seq (0 when there is none)."""
        return int(await self._db.fetchval(QUERIES["last_event_seq"]))

    async def read_events(self, after: int, limit: int) -> list[Event]:
        """Events with seq > `after`, in seq order."""
        return self._events(await self._db.fetch(QUERIES["read_events"], after, limit), False)

    async def read_settled_events(self, after: int, limit: int) -> list[Event]:
        """Events with seq > `after`, in seq order, up to the first one whose transaction
        is not older than every running one (a smaller seq may still commit before it)."""
        return self._events(await self._db.fetch(QUERIES["read_events"], after, limit), True)

    @staticmethod
    def _events(rows: list[asyncpg.Record], settled_only: bool) -> list[Event]:
        out = []
        for r in rows:
            if settled_only and not r["settled"]:
                break
            out.append(
                Event(
                    kind=r["kind"],
                    at=r["at"],
                    data=json.loads(r["data"]),
                    message_id=r["message_id"],
                    account=r["account"],
                    seq=r["seq"],
                    campaign=r["campaign"],
                    metadata=r["metadata"],
                )
            )
        return out

    # -- reads and housekeeping --------------------------------------------------------

    async def counts(self) -> StatusCounts:
        """Per state, pool and source IP, over live and finished messages."""
        rows = await self._db.fetch(QUERIES["counts"])
        by_state: dict[str, int] = defaultdict(int)
        by_pool: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        by_ip: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in rows:
            state, n = r["state"], int(r["n"])
            by_state[state] += n
            if r["pool"] is not None:
                by_pool[r["pool"]][state] += n
            if r["source_ip"] is not None:
                by_ip[r["source_ip"]][state] += n
        return StatusCounts(
            by_state=dict(by_state),
            by_pool={k: dict(v) for k, v in by_pool.items()},
            by_source_ip={k: dict(v) for k, v in by_ip.items()},
        )

    async def next_due(self) -> float | None:
        """Earliest due time of a waiting message, None when nothing waits."""
        due: float | None = await self._db.fetchval(QUERIES["next_due"])
        return due

    async def live_workers(self, now: float) -> int:
        """Workers whose lease has not expired at `now`."""
        return int(await self._db.fetchval(QUERIES["count_live_workers"], now))

    async def active_count(self) -> int:
        """Messages not yet finished."""
        return int(await self._db.fetchval(QUERIES["active_count"]))

    async def get(self, ids: Sequence[str]) -> list[MessageRecord]:
        """Stored records of `ids`, live or finished; unknown ids are left out."""
        if not ids:
            return []
        rows = await self._db.fetch(QUERIES["get"], list(ids))
        order = {id_: i for i, id_ in reversed(list(enumerate(ids)))}
        rows.sort(key=lambda r: order[r["id"]])
        return [
            MessageRecord(
                id=r["id"],
                account=r["account"],
                idempotency_key=r["idempotency_key"],
                state=MessageState(r["state"]),
                attempts=r["attempts"],
                rcpt=r["rcpt"],
                last_reply_code=r["last_reply_code"],
                last_reply_text=r["last_reply_text"],
                source_ip=r["source_ip"],
                platform_domain=r["platform_domain"],
                provider=r["provider"],
            )
            for r in rows
        ]

    # -- held mail ---------------------------------------------------------------------

    @staticmethod
    def _held_args(which: HeldFilter) -> tuple[object, ...]:
        ids = list(which.ids) if which.ids is not None else None
        return (which.account, which.campaign, which.stream, which.held_before, ids)

    async def held(self, which: HeldFilter, limit: int = 1000) -> list[HeldMessage]:
        rows = await self._db.fetch(QUERIES["held"], *self._held_args(which), limit)
        return [
            HeldMessage(
                id=r["id"],
                account=r["account"],
                campaign=r["campaign"],
                stream=r["stream"],
                rcpt=r["rcpt"],
                attempts=r["attempts"],
                reason=r["reason"],
                reply_code=r["last_reply_code"],
                reply_text=r["last_reply_text"],
                held_at=r["finished_at"],
                source_ip=r["source_ip"],
                mx_host=r["mx_host"],
                resends=r["resends"],
            )
            for r in rows
        ]

    async def held_count(self) -> int:
        return int(await self._db.fetchval(QUERIES["held_count"]))

    async def release_held(self, which: HeldFilter, now: float) -> int:
        row = await self._db.fetchrow(QUERIES["release_held"], *self._held_args(which), now)
        assert row is not None
        return int(row["released"])

    async def resolve_held(self, which: HeldFilter, state: MessageState, now: float) -> int:
        st = resolve_state(state)
        n = await self._db.fetchval(QUERIES["resolve_held"], *self._held_args(which), st.value, now)
        return int(n)

    async def cancel(self, account: str, campaign: str | None = None) -> int:
        """Waiting messages of `account` (of `campaign` when given) become cancelled, with
        their events, CANCEL_BATCH per statement (short transactions, no long locks)."""
        if not isinstance(account, str) or not account:
            raise InvalidQueueInput(field="account", reason="expected a non-empty string")
        now = time.time()
        if campaign is not None:
            await self._db.fetch(
                SUPPRESSION_QUERIES["cancel_campaign_record"], account, campaign, now
            )
        total, cursor = 0, ""
        while True:
            row = await self._db.fetchrow(
                SUPPRESSION_QUERIES["cancel_batch"], account, campaign, cursor, CANCEL_BATCH, now
            )
            assert row is not None
            total += int(row["cancelled"])
            if row["walked"] < CANCEL_BATCH:
                return total
            cursor = row["last_id"]

    async def prune(
        self, now: float, retention: float, idempotency_retention: float
    ) -> tuple[int, int]:
        """Delete finished messages and old keys in batches of 1,000 rows per statement."""
        if retention < 0:
            raise InvalidQueueInput(field="retention", reason="must not be negative")
        if idempotency_retention < 0:
            raise InvalidQueueInput(field="idempotency_retention", reason="must not be negative")
        messages = await self._prune(QUERIES["prune_messages"], now - retention)
        await self._prune(QUERIES["prune_events"], now - max(retention, EVENT_RETENTION))
        keys = await self._prune(QUERIES["prune_keys"], now - idempotency_retention)
        await self._prune(_D["prune_attempts"], now - retention)
        await self._db.fetchval(_D["prune_daily_counts"], utc_day(now - retention))
        return messages, keys

    async def _prune(self, query: str, cutoff: float) -> int:
        total = 0
        while True:
            n = int(await self._db.fetchval(query, cutoff, _PRUNE_BATCH))
            total += n
            if n < _PRUNE_BATCH:
                return total

    async def describe(self, ids: Sequence[str]) -> list[MessageView]:
        """Views of `ids`, live or finished, in the order asked."""
        if not ids:
            return []
        rows = await self._db.fetch(REPORT_QUERIES["describe"], list(ids))
        found = {r["id"]: _view(r) for r in rows}
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    async def list_messages(
        self,
        account: str,
        *,
        campaign: str | None = None,
        state: MessageState | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> list[MessageView]:
        """A page of the account's messages, newest first."""
        rows = await self._db.fetch(
            REPORT_QUERIES["list_messages"],
            account,
            campaign,
            None if state is None else MessageState(state).value,
            before or "\U0010ffff",
            max(0, min(limit, 1000)),
        )
        return [_view(r) for r in rows]

    async def attempts(self, ids: Sequence[str]) -> dict[str, list[AttemptRecord]]:
        """Attempts per id from the attempt log, oldest first."""
        out: dict[str, list[AttemptRecord]] = {i: [] for i in ids}
        if not ids:
            return out
        for r in await self._db.fetch(_D["attempts_of"], list(ids)):
            out[r["message_id"]].append(
                AttemptRecord(
                    at=r["at"],
                    state=MessageState(r["state"]),
                    source_ip=r["source_ip"],
                    platform_domain=r["platform_domain"],
                    mx_host=r["mx_host"],
                    tls=r["tls"],
                    reply_code=r["reply_code"],
                    reply_text=r["reply_text"],
                    category=r["category"],
                    provider=r["provider"],
                )
            )
        return out

    # -- deliverability ------------------------------------------------------------------

    async def daily_counts(self, day: int) -> dict[tuple[str, str], int]:
        rows = await self._db.fetch(_D["daily_counts"], day)
        return {(r["source_ip"], r["provider"]): int(r["count"]) for r in rows}

    async def warmup_progress(self) -> list[WarmupRecord]:
        rows = await self._db.fetch(_D["warmup_progress"])
        return [WarmupRecord(r["address"], r["schedule"], r["day"], r["on_day"]) for r in rows]

    async def save_warmup_progress(self, records: Sequence[WarmupRecord]) -> None:
        batch = {r.address: r for r in records}  # one row per address per statement
        if not batch:
            return
        rs = list(batch.values())
        await self._db.fetchval(
            _D["save_warmup"],
            [r.address for r in rs],
            [r.schedule for r in rs],
            [r.day for r in rs],
            [r.on_day for r in rs],
            time.time(),
        )

    async def attempt_counts(self, since: float) -> dict[tuple[str, str], int]:
        rows = await self._db.fetch(_D["attempt_counts"], since)
        return {(r["source_ip"], r["provider"]): int(r["n"]) for r in rows}

    async def ping(self) -> None:
        """One trivial statement through the pool."""
        await self._db.fetchval("SELECT 1")

    # -- accounts and API keys (accounts.py) -------------------------------------------

    async def seed_accounts(self, seeds: Sequence[AccountSeed]) -> list[str]:
        """Insert-if-absent in one statement."""
        return await self._accounts.seed(seeds)

    async def create_account(
        self,
        name: str,
        *,
        author_domains: Sequence[str] = (),
        pool: str | None = None,
        trusted: bool = False,
        account_id: str | None = None,
    ) -> Account:
        return await self._accounts.create(
            name, author_domains=author_domains, pool=pool, trusted=trusted, account_id=account_id
        )

    async def get_account(self, account_id: str) -> Account | None:
        return await self._accounts.get(account_id)

    async def find_account(self, ref: str) -> Account | None:
        return await self._accounts.find(ref)

    async def list_accounts(self, *, after: str | None = None, limit: int = 100) -> list[Account]:
        return await self._accounts.listing(after, limit)

    # -- webhook endpoints -------------------------------------------------------------

    async def save_webhook(self, record: WebhookRecord) -> None:
        await self._webhooks.save(record, time.time())

    async def save_webhook_state(self, webhook_id: str, state: str) -> None:
        await self._webhooks.save_state(webhook_id, state)

    async def list_webhooks(
        self, account: str | None = None, webhook_id: str | None = None
    ) -> list[WebhookRecord]:
        return await self._webhooks.listing(account, webhook_id)

    async def rename_account(self, account_id: str, name: str) -> Account:
        return await self._accounts.rename(account_id, name)

    async def set_account_status(self, account_id: str, status: AccountStatus) -> Account:
        """Pause (hold the waiting mail) or resume (release it), CANCEL_BATCH messages per
        statement after the status change, which itself holds new enqueues and marks."""
        account = await self._accounts.set_status(account_id, status)
        cursor = ""
        while True:
            row = await self._db.fetchrow(
                SUPPRESSION_QUERIES["hold_batch"], account_id, cursor, CANCEL_BATCH, HOLD_OFFSET
            )
            assert row is not None
            if row["walked"] < CANCEL_BATCH:
                break
            cursor = row["last_id"]
        if account.status is AccountStatus.ACTIVE:
            await self._db.fetch(QUERIES["notify_work"])  # released mail is due again
        return account

    async def create_api_key(
        self, account_id: str, scope: KeyScope | str, label: str = ""
    ) -> NewApiKey:
        return await self._accounts.create_key(account_id, scope, label)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        return await self._accounts.get_key(key_id)

    async def list_api_keys(self, account_id: str) -> list[ApiKey]:
        return await self._accounts.keys_of(account_id)

    async def revoke_api_key(self, account_id: str, key_id: str) -> bool:
        return await self._accounts.revoke(account_id, key_id)

    # -- suppression lists -----------------------------------------------------------------

    async def put_suppressions(self, entries: Sequence[Suppression]) -> int:
        # The last entry of an address wins (ON CONFLICT may not touch a row twice).
        unique = {(e.account, e.address): e for e in entries}
        if not unique:
            return 0
        rows = list(unique.values())
        await self._db.fetch(
            SUPPRESSION_QUERIES["put"],
            [e.account for e in rows],
            [e.address for e in rows],
            [e.reason.value for e in rows],
            [e.source for e in rows],
            [e.created_at for e in rows],
        )
        return len(entries)

    async def get_suppression(self, account: str, address: str) -> Suppression | None:
        row = await self._db.fetchrow(SUPPRESSION_QUERIES["get"], account, address)
        return None if row is None else _suppression(row)

    async def delete_suppression(self, account: str, address: str) -> bool:
        return bool(await self._db.fetch(SUPPRESSION_QUERIES["delete"], account, address))

    async def list_suppressions(
        self, account: str, *, after: str | None = None, limit: int = 1000
    ) -> list[Suppression]:
        rows = await self._db.fetch(
            SUPPRESSION_QUERIES["listing"], account, after or "", max(0, min(limit, 10_000))
        )
        return [_suppression(r) for r in rows]


def _suppression(r: asyncpg.Record) -> Suppression:
    return Suppression(
        account=r["account"],
        address=r["address"],
        reason=SuppressionReason(r["reason"]),
        source=r["source"],
        created_at=r["created_at"],
    )


def _view(r: asyncpg.Record) -> MessageView:
    state = MessageState(r["state"])
    return MessageView(
        id=r["id"],
        account=r["account"],
        idempotency_key=r["idempotency_key"],
        state=state,
        attempts=r["attempts"],
        rcpt=r["rcpt"],
        stream=r["stream"],
        campaign=r["campaign"],
        metadata=r["metadata"],
        enqueued_at=r["enqueued_at"],
        updated_at=r["updated_at"],
        due_at=r["due_at"] if state in (MessageState.QUEUED, MessageState.DEFERRED) else None,
        expires_at=r["expires_at"],
        last_reply_code=r["last_reply_code"],
        last_reply_text=r["last_reply_text"],
        source_ip=r["source_ip"],
        platform_domain=r["platform_domain"],
        mx_host=r["mx_host"],
    )
