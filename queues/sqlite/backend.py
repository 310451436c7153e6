"""`SqliteQueue`: the embedded queue backend (stdlib sqlite3, WAL mode, one file per node)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from queues.accounts import (
    Account,
    AccountNotFound,
    AccountSeed,
    AccountStatus,
    ApiKey,
    KeyScope,
    NewApiKey,
    check_account_id,
    check_domains,
    check_name,
    make_key,
    new_account_id,
)
from queues.deliverability import ClaimSkip, WarmupRecord
from queues.errors import IdempotencyConflict, InvalidQueueInput, QueueError, SchemaMismatch
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
from queues.sqlite import accounts, delivery, leases, reports, status, webhooks
from queues.sqlite import events as events_module
from queues.sqlite import suppressions as suppression_lists
from queues.sqlite.connection import SqliteConnection, add_missing_columns, transaction
from queues.sqlite.enqueue import enqueue_batch
from queues.sqlite.locks import OwnLocks, lock_dir
from queues.sqlite.sql import schema
from queues.suppressions import Suppression
from queues.webhooks import WebhookRecord

# Messages cancelled (or held) per transaction: each holds the write lock for ~30 ms.
CANCEL_BATCH = 1_000


async def _yield_lock(took: float) -> None:
    """Pause after a batch as long as it took (at least 5 ms), so that a writer of another
    connection waiting on the busy timeout (it polls every 1-25 ms in its first 100 ms) gets
    the lock between batches. Back to back, the batches kept it: a mark waited 1.7 s
    behind a purge of 1,000,000 messages (bench/purge.py)."""
    await asyncio.sleep(max(took, 0.005))


class SqliteQueue:
    """The `Queue` protocol on one SQLite file shared by every process of a node.

    Durability: the file is in WAL mode and every write is one `BEGIN IMMEDIATE`
    transaction that has committed before its coroutine returns. With
    `synchronous="FULL"` (the default) SQLite fsyncs the WAL at each commit, so an
    acknowledged enqueue, committing mark or outcome survives a power loss or OS crash.
    With `"NORMAL"` the WAL is fsynced only at checkpoints: a committed write survives the
    crash of any process (it is in the OS page cache), but the last commits before a power
    loss or OS crash may be rolled back (the file stays consistent). `"EXTRA"` also fsyncs
    the directory.

    Concurrency: each queue object owns one connection, used only from its own thread, so
    no sqlite3 call runs on the event loop. Processes serialise on SQLite's write lock
    (waiting up to `busy_timeout` seconds). Worker liveness is an `flock` on a lock file
    beside the database (see `queues.sqlite.locks`): a worker whose process lives is never
    taken over; `lease_ttl` only applies to a worker whose lock file cannot be probed.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        lease_ttl: float = DEFAULT_LEASE_TTL,
        busy_timeout: float = 30.0,
    ) -> None:
        if not lease_ttl > 0:
            raise InvalidQueueInput(
                field="lease_ttl", reason=f"must be positive, got {lease_ttl!r}"
            )
        self.path = Path(path)
        self.lease_ttl = lease_ttl
        self._db = SqliteConnection(self.path, synchronous=synchronous, busy_timeout=busy_timeout)
        self._locks = OwnLocks(lock_dir(self.path))
        self._leases: list[Lease] = []

    async def open(self) -> None:
        """Open the connection and create the schema when missing.

        The schema version lives in `PRAGMA user_version`; a file written by another schema
        version is refused with an error naming the file, never half-migrated."""
        await self._db.open()
        try:
            await self._db.write(partial(_check_schema_version, path=self.path))
            await self._db.write(add_missing_columns)  # before the schema's indexes use them
            await self._db.close()
            await self._db.open(schema())
        except BaseException:
            await self._db.close()
            raise

    async def close(self) -> None:
        """Unregister this object's idle workers, close the connection, release the locks.

        A worker still holding messages in flight stays registered with its lock released:
        the next `recover` (of any process) takes its messages over, as after a crash."""
        try:
            for lease in self._leases:
                with contextlib.suppress(sqlite3.Error, QueueError):
                    if await self._db.write(partial(leases.drop_if_idle, lease=lease)):
                        self._locks.release(lease.worker_id, remove_file=True)
            await self._db.close()
        finally:
            self._leases.clear()
            self._locks.release_all()

    async def enqueue_many(self, messages: Sequence[NewMessage]) -> list[EnqueueResult]:
        """Store a batch in one transaction (see the protocol for idempotency)."""
        if not messages:
            return []
        batch = list(messages)  # the caller's list may change while the thread works
        results = await self._db.write(partial(enqueue_batch, messages=batch, now=time.time()))
        return results  # type: ignore[return-value]  # no conflicts without `report`

    async def enqueue_each(
        self, messages: Sequence[NewMessage]
    ) -> list[EnqueueResult | IdempotencyConflict]:
        """One transaction; conflicting messages get their conflict as result."""
        if not messages:
            return []
        batch = list(messages)
        return await self._db.write(
            partial(enqueue_batch, messages=batch, now=time.time(), report=True)
        )

    async def register_worker(self) -> Lease:
        """Lock a fresh lock file, then register under the next epoch."""
        lease = await self._db.run(partial(self._register, worker_id=leases.new_worker_id()))
        self._leases.append(lease)
        return lease

    def _register(self, conn: sqlite3.Connection, *, worker_id: str) -> Lease:
        # Lock first, row second: a visible worker row always has a held lock while its
        # process lives.
        lock_path = self._locks.acquire(worker_id)
        insert = partial(
            leases.insert_worker, worker_id=worker_id, lock_path=str(lock_path), now=time.time()
        )
        try:
            return transaction(conn, insert)
        except BaseException:
            self._locks.release(worker_id)
            lock_path.unlink(missing_ok=True)
            raise

    async def heartbeat(self, lease: Lease) -> bool:
        """Renew the lease; False when it was taken over."""
        return await self._db.write(partial(leases.heartbeat, lease=lease, now=time.time()))

    async def live_workers(self, now: float) -> int:
        """Workers that heartbeat within `lease_ttl` of `now`."""
        return await self._db.run(partial(leases.live_workers, since=now - self.lease_ttl))

    async def claim(
        self, lease: Lease, limit: int, now: float, skip: Sequence[ClaimSkip] = ()
    ) -> list[ClaimedMessage]:
        """Claim due messages in one transaction; LeaseLost when the lease is stale."""
        if limit <= 0:
            return []
        return await self._db.write(
            partial(delivery.claim, lease=lease, limit=limit, now=now, skip=list(skip))
        )

    async def release_unheld(self, lease: Lease, held: Sequence[str]) -> int:
        """Requeue `sending` messages of `lease` not in `held` (see the Queue protocol). A
        local claim whose transaction failed committed nothing; this is for the contract."""
        return await self._db.write(
            partial(delivery.release_unheld, lease=lease, held=list(held), now=time.time())
        )

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 (a poll period)
        """Sleep `timeout` seconds: processes sharing a SQLite file have no notifications,
        so the poll interval is the wait."""
        await asyncio.sleep(timeout)

    async def mark_committing(self, lease: Lease, ids: Sequence[str]) -> set[str]:
        """The committing compare-and-set; committed (durable) before it returns."""
        if not ids:
            return set()
        return await self._db.write(
            partial(delivery.mark_committing, lease=lease, ids=list(ids), now=time.time())
        )

    async def record_outcomes(
        self, lease: Lease, outcomes: Sequence[OutcomeRecord], events: Sequence[Event] = ()
    ) -> int:
        """Apply a batch of outcomes in one fenced transaction, with their events and
        `events`; how many outcomes applied."""
        if not outcomes and not events:
            return 0
        batch = list(outcomes)
        delivery.check_outcomes(batch)
        try:
            return await self._db.write(
                partial(
                    delivery.record_outcomes,
                    lease=lease,
                    outcomes=batch,
                    now=time.time(),
                    events=list(events),
                )
            )
        except (sqlite3.DataError, sqlite3.IntegrityError, sqlite3.InterfaceError) as e:
            # The batch's data, not the database: the caller may split it (nothing written).
            raise InvalidQueueInput(field="outcomes", reason=f"refused by SQLite: {e}") from e

    async def append_events(self, events: Sequence[Event]) -> None:
        """Store events in one transaction."""
        if events:
            await self._db.write(partial(events_module.write_events, events=list(events)))

    async def read_events(self, after: int, limit: int) -> list[Event]:
        """Events with seq > `after`, oldest first."""
        return await self._db.run(partial(events_module.read, after=after, limit=limit))

    async def read_settled_events(self, after: int, limit: int) -> list[Event]:
        """The same as read_events: one writer at a time commits in seq order."""
        return await self.read_events(after, limit)

    async def last_event_seq(self) -> int:
        """The largest stored event seq (0 when there is none)."""
        return await self._db.run(events_module.last_seq)

    async def recover(
        self, now: float, ambiguous_policy: Mapping[str, str] | None = None
    ) -> RecoveryReport:
        """Take over the messages of dead workers (each in its own transaction)."""
        policy = ambiguous_policy or {}
        retry_streams = {stream for stream, action in policy.items() if action == "retry"}
        return await self._db.run(
            partial(
                leases.recover,
                now=now,
                lease_ttl=self.lease_ttl,
                is_own=self._locks.holds,
                retry_streams=retry_streams,
            )
        )

    async def counts(self) -> StatusCounts:
        """Counts per state, per pool and per last source IP."""
        return await self._db.run(status.counts)

    async def next_due(self) -> float | None:
        """Earliest due time among queued and deferred messages."""
        return await self._db.run(status.next_due)

    async def active_count(self) -> int:
        """Messages in queued, deferred, sending or committing."""
        return await self._db.run(status.active_count)

    async def get(self, ids: Sequence[str]) -> list[MessageRecord]:
        """Stored records of the given ids, in the order asked (missing ones left out)."""
        return await self._db.run(partial(status.get, ids=list(ids)))

    async def prune(
        self, now: float, retention: float, idempotency_retention: float
    ) -> tuple[int, int]:
        """Drop old finished messages and old idempotency keys, a small batch per
        transaction so that claims and enqueues keep flowing meanwhile."""
        messages = await self._drain(partial(status.prune_messages, before=now - retention))
        await self._drain(
            partial(events_module.prune, before=now - max(retention, EVENT_RETENTION))
        )
        await self._drain(partial(status.prune_attempts, before=now - retention))
        keys = await self._drain(partial(status.prune_keys, before=now - idempotency_retention))
        return messages, keys

    async def _drain(self, delete_batch: partial[int]) -> int:
        total = 0
        while True:
            n = await self._db.write(delete_batch)
            total += n
            if n < status.PRUNE_BATCH:
                return total

    # -- held mail ---------------------------------------------------------------------

    async def held(self, which: HeldFilter, limit: int = 1000) -> list[HeldMessage]:
        return await self._db.run(partial(status.held, which=which, limit=limit))

    async def held_count(self) -> int:
        return await self._db.run(status.held_count)

    async def release_held(self, which: HeldFilter, now: float) -> int:
        return await self._db.write(partial(status.release_held, which=which, now=now))

    async def resolve_held(self, which: HeldFilter, state: MessageState, now: float) -> int:
        st = resolve_state(state)
        return await self._db.write(partial(status.resolve_held, which=which, state=st, now=now))

    async def cancel(self, account: str, campaign: str | None = None) -> int:
        """Cancel the account's (or campaign's) queued and deferred messages, CANCEL_BATCH
        per transaction so that the one write lock is never held for long."""
        now = time.time()
        if campaign is not None:
            await self._db.write(
                partial(
                    suppression_lists.record_cancel, account=account, campaign=campaign, now=now
                )
            )
        total, cursor = 0, ""
        while True:
            started = time.perf_counter()
            n, after = await self._db.write(
                partial(
                    suppression_lists.cancel_batch,
                    account=account,
                    campaign=campaign,
                    after=cursor,
                    limit=CANCEL_BATCH,
                    now=now,
                )
            )
            total += n
            if after is None:
                return total
            cursor = after
            await _yield_lock(time.perf_counter() - started)

    async def describe(self, ids: Sequence[str]) -> list[MessageView]:
        """Views of the given ids, in the order asked."""
        return await self._db.run(partial(reports.describe, ids=list(ids)))

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
        return await self._db.run(
            partial(
                reports.listing,
                account=account,
                campaign=campaign,
                state=None if state is None else MessageState(state),
                before=before,
                limit=max(0, min(limit, 1000)),
            )
        )

    async def attempts(self, ids: Sequence[str]) -> dict[str, list[AttemptRecord]]:
        """Attempts per id from the attempt log, oldest first."""
        return await self._db.run(partial(status.attempts, ids=list(ids)))

    # -- deliverability ------------------------------------------------------------------

    async def daily_counts(self, day: int) -> dict[tuple[str, str], int]:
        return await self._db.run(partial(status.daily_counts, day=day))

    async def warmup_progress(self) -> list[WarmupRecord]:
        return await self._db.run(status.warmup_progress)

    async def save_warmup_progress(self, records: Sequence[WarmupRecord]) -> None:
        batch = list(records)
        if batch:
            await self._db.write(
                partial(status.save_warmup_progress, records=batch, now=time.time())
            )

    async def attempt_counts(self, since: float) -> dict[tuple[str, str], int]:
        return await self._db.run(partial(status.attempt_counts, since=since))

    async def ping(self) -> None:
        """One trivial statement on the connection thread."""
        await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- accounts and API keys -----------------------------------------------------------

    async def seed_accounts(self, seeds: Sequence[AccountSeed]) -> list[str]:
        """Insert-if-absent, one transaction for all seeds."""
        batch = [
            AccountSeed(check_account_id(s.id), check_domains(list(s.author_domains)), s.pool)
            for s in seeds
        ]
        if not batch:
            return []
        return await self._db.write(partial(accounts.seed, seeds=batch, now=time.time()))

    async def create_account(
        self,
        name: str,
        *,
        author_domains: Sequence[str] = (),
        pool: str | None = None,
        trusted: bool = False,
        account_id: str | None = None,
    ) -> Account:
        """A new account (AccountExists when the name or id is taken)."""
        return await self._db.write(
            partial(
                accounts.create,
                account_id=check_account_id(account_id or new_account_id()),
                name=check_name(name),
                author_domains=check_domains(list(author_domains)),
                pool=pool,
                trusted=trusted,
                now=time.time(),
            )
        )

    async def get_account(self, account_id: str) -> Account | None:
        return await self._db.run(partial(accounts.by_id, account_id=account_id))

    async def find_account(self, ref: str) -> Account | None:
        found = await self.get_account(ref)
        if found is None:
            found = await self._db.run(partial(accounts.by_name, name=ref))
        return found

    async def list_accounts(self, *, after: str | None = None, limit: int = 100) -> list[Account]:
        return await self._db.run(
            partial(accounts.listing, after=after, limit=max(0, min(limit, 1000)))
        )

    # -- webhook endpoints -------------------------------------------------------------

    async def save_webhook(self, record: WebhookRecord) -> None:
        await self._db.write(partial(webhooks.save, record=record, now=time.time()))

    async def save_webhook_state(self, webhook_id: str, state: str) -> None:
        await self._db.write(partial(webhooks.save_state, webhook_id=webhook_id, state=state))

    async def list_webhooks(
        self, account: str | None = None, webhook_id: str | None = None
    ) -> list[WebhookRecord]:
        return await self._db.run(partial(webhooks.listing, account=account, webhook_id=webhook_id))

    async def rename_account(self, account_id: str, name: str) -> Account:
        return await self._db.write(
            partial(accounts.rename, account_id=account_id, name=check_name(name), now=time.time())
        )

    async def set_account_status(self, account_id: str, status: AccountStatus) -> Account:
        """Pause (hold the waiting mail) or resume (release it), CANCEL_BATCH messages per
        transaction after the status change, which itself holds new enqueues and marks."""
        status = AccountStatus(status)
        account = await self._db.write(
            partial(accounts.set_status, account_id=account_id, status=status, now=time.time())
        )
        cursor = ""
        while True:
            started = time.perf_counter()
            after = await self._db.write(
                partial(
                    suppression_lists.hold_batch,
                    account=account_id,
                    after=cursor,
                    limit=CANCEL_BATCH,
                )
            )
            if after is None:
                return account
            cursor = after
            await _yield_lock(time.perf_counter() - started)

    async def create_api_key(
        self, account_id: str, scope: KeyScope | str, label: str = ""
    ) -> NewApiKey:
        made = make_key(account_id, scope, label, time.time())
        await self._db.write(partial(accounts.insert_key, key=made.key))
        return made

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        return await self._db.run(partial(accounts.key_by_id, key_id=key_id))

    async def list_api_keys(self, account_id: str) -> list[ApiKey]:
        if await self.get_account(account_id) is None:
            raise AccountNotFound(field="account_id", reason=f"no account {account_id!r}")
        return await self._db.run(partial(accounts.keys_of, account_id=account_id))

    async def revoke_api_key(self, account_id: str, key_id: str) -> bool:
        return await self._db.write(
            partial(accounts.revoke, account_id=account_id, key_id=key_id, now=time.time())
        )

    # -- suppression lists -----------------------------------------------------------------

    async def put_suppressions(self, entries: Sequence[Suppression]) -> int:
        batch = list(entries)
        if not batch:
            return 0
        return await self._db.write(partial(suppression_lists.put, entries=batch))

    async def get_suppression(self, account: str, address: str) -> Suppression | None:
        return await self._db.run(partial(suppression_lists.get, account=account, address=address))

    async def delete_suppression(self, account: str, address: str) -> bool:
        return await self._db.write(
            partial(suppression_lists.delete, account=account, address=address)
        )

    async def list_suppressions(
        self, account: str, *, after: str | None = None, limit: int = 1000
    ) -> list[Suppression]:
        return await self._db.run(
            partial(
                suppression_lists.listing,
                account=account,
                after=after,
                limit=max(0, min(limit, 10_000)),
            )
        )


SCHEMA_VERSION = 1


def _check_schema_version(conn: sqlite3.Connection, *, path: Path) -> None:
    """Stamp a new file with SCHEMA_VERSION; refuse a file of another version."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    tables = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
    ).fetchone()[0]
    if version == 0 and tables == 0:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return
    if version != SCHEMA_VERSION:
        raise SchemaMismatch(
            f"{path}: queue schema version {version or 'unversioned (pre-release)'}, this "
            f"maildispatch knows version {SCHEMA_VERSION}; drain it with the version that wrote "
            "it, or move the file away to start a new queue",
            found=version,
            known=SCHEMA_VERSION,
        )
