"""The store's part of deliverability, held against every backend: the provider stored
with a message, claims that skip providers, "not now" without an attempt, the attempt log
written with its outcome, daily counts per (IP, provider, UTC day), warmup progress."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from queues.deliverability import ClaimSkip, WarmupRecord, utc_day
from queues.protocol import MessageState, OutcomeRecord, Queue
from queues.sqlite.backend import SqliteQueue
from queues.sqlite.sql import schema
from tests.support.queues import MakeQueue, delivered, ids, message

DAY = 86400.0


def not_now(m_id: str, provider: str, due: float) -> OutcomeRecord:
    """Admission said "not before `due`": back to the queue, no attempt counted."""
    return OutcomeRecord(
        m_id, MessageState.QUEUED, counts_attempt=False, retry_at=due, provider=provider
    )


async def test_not_now_stores_the_provider_and_due_time_without_an_attempt(queue: Queue) -> None:
    now = time.time()
    m = message()
    await queue.enqueue_many([m])
    lease = await queue.register_worker()
    (claimed,) = await queue.claim(lease, 10, now)
    assert claimed.provider is None  # never routed yet
    assert await queue.record_outcomes(lease, [not_now(m.id, "google", now + 60)]) == 1
    (record,) = await queue.get([m.id])
    assert (record.state, record.attempts, record.provider) == (MessageState.QUEUED, 0, "google")
    assert (await queue.attempts([m.id]))[m.id] == []  # not an attempt
    # No churn: not claimed again before its due time, then claimed with its provider.
    assert await queue.claim(lease, 10, now + 59) == []
    (again,) = await queue.claim(lease, 10, now + 60)
    assert (again.id, again.provider, again.attempts) == (m.id, "google", 0)


async def test_claims_skip_providers_that_cannot_take_mail(queue: Queue) -> None:
    now = time.time()
    google = [message(stream="broadcast"), message(stream="transactional")]
    yahoo = [message(stream="broadcast")]
    fresh = [message(stream="broadcast")]  # never routed: no provider, always claimable
    await queue.enqueue_many([*google, *yahoo, *fresh])
    lease = await queue.register_worker()
    got = await queue.claim(lease, 10, now)
    provider = {m.id: "google" for m in google} | {m.id: "yahoo" for m in yahoo}
    await queue.record_outcomes(
        lease, [not_now(m.id, provider[m.id], now) for m in got if m.id in provider]
    )
    # `fresh` is still held by this lease, so only the routed ones can come back.
    skipped = await queue.claim(lease, 10, now, [ClaimSkip("google")])
    assert ids(skipped) == ids(yahoo)
    await queue.record_outcomes(lease, [not_now(m.id, "yahoo", now) for m in skipped])
    # A full ready queue of broadcast mail: the provider's transactional mail still comes.
    only = await queue.claim(lease, 10, now, [ClaimSkip("google", "broadcast")])
    assert ids(only) == {google[1].id, yahoo[0].id}
    await queue.record_outcomes(lease, [not_now(m.id, provider[m.id], now) for m in only])
    both = await queue.claim(lease, 10, now, [ClaimSkip("google"), ClaimSkip("yahoo")])
    assert both == []
    assert ids(await queue.claim(lease, 10, now)) == ids(google) | ids(yahoo)


async def test_the_attempt_log_is_written_with_the_outcomes(queue: Queue) -> None:
    now = time.time()
    m, n = message(), message()
    await queue.enqueue_many([m, n])
    lease = await queue.register_worker()
    await queue.claim(lease, 10, now)
    deferred = OutcomeRecord(
        m.id,
        MessageState.DEFERRED,
        retry_at=now,
        reply_code=421,
        reply_text="4.7.28 rate limited",
        source_ip="127.0.0.2",
        platform_domain="send1.example",
        mx_host="mx1.google.example",
        provider="google",
        tls=True,
        attempted_at=now - 5,
        category="throttled",
    )
    routing = OutcomeRecord(n.id, MessageState.DEFERRED, retry_at=now, reply_text="dns: servfail")
    assert await queue.record_outcomes(lease, [deferred, routing]) == 2
    await queue.claim(lease, 10, now)
    await queue.record_outcomes(
        lease, [delivered(m.id, provider="google", tls=False, attempted_at=now)]
    )
    log = (await queue.attempts([m.id]))[m.id]
    assert [(a.state, a.reply_code, a.at) for a in log] == [
        (MessageState.DEFERRED, 421, now - 5),
        (MessageState.DELIVERED, 250, now),
    ]
    first = log[0]
    assert (first.source_ip, first.platform_domain, first.mx_host, first.provider) == (
        "127.0.0.2",
        "send1.example",
        "mx1.google.example",
        "google",
    )
    assert (first.tls, first.reply_text, first.category) == (
        True,
        "4.7.28 rate limited",
        "throttled",
    )
    assert log[1].tls is False
    (route_fail,) = (await queue.attempts([n.id]))[n.id]  # an attempt without a source IP
    assert (route_fail.source_ip, route_fail.reply_text) == (None, "dns: servfail")
    assert await queue.attempt_counts(now - 60) == {("127.0.0.2", "google"): 2}
    assert await queue.attempt_counts(now + 1) == {}


async def test_a_stale_lease_logs_and_counts_nothing(make_queue: MakeQueue) -> None:
    now = time.time()
    first = await make_queue(lease_ttl=0.2)
    m = message()
    await first.enqueue_many([m])
    old = await first.register_worker()
    await first.claim(old, 10, now)
    await make_queue.crash(first)  # the old worker dies; another takes its message over
    second = await make_queue(lease_ttl=0.2)
    later = time.time() + 1.0
    await second.recover(later)
    fresh = await second.register_worker()
    assert ids(await second.claim(fresh, 10, later)) == {m.id}
    assert await second.record_outcomes(old, [delivered(m.id, provider="google")]) == 0
    assert (await second.attempts([m.id]))[m.id] == []
    assert await second.daily_counts(utc_day(time.time())) == {}


async def test_daily_counts_per_ip_provider_and_utc_day(queue: Queue) -> None:
    now = time.time()
    today = utc_day(now)
    batch = [message() for _ in range(5)]
    await queue.enqueue_many(batch)
    lease = await queue.register_worker()
    await queue.claim(lease, 10, now)
    a, b, c, d, e = batch
    await queue.record_outcomes(
        lease,
        [
            delivered(a.id, source_ip="127.0.0.2", provider="google", attempted_at=now),
            delivered(b.id, source_ip="127.0.0.2", provider="google", attempted_at=now),
            delivered(c.id, source_ip="127.0.0.3", provider="google", attempted_at=now),
            # an attempt just before an earlier midnight counts on its own day (two days back,
            # so the prune below drops it whatever the time of day now)
            delivered(
                d.id, source_ip="127.0.0.2", provider="yahoo", attempted_at=((today - 1) * DAY) - 1
            ),
            not_now(e.id, "yahoo", now),  # not an attempt: not counted
        ],
    )
    assert await queue.daily_counts(today) == {
        ("127.0.0.2", "google"): 2,
        ("127.0.0.3", "google"): 1,
    }
    assert await queue.daily_counts(today - 2) == {("127.0.0.2", "yahoo"): 1}
    await queue.claim(lease, 10, now)
    await queue.record_outcomes(
        lease, [delivered(e.id, source_ip="127.0.0.2", provider="google", attempted_at=now)]
    )
    assert (await queue.daily_counts(today))[("127.0.0.2", "google")] == 3
    # Pruning the history of older days keeps today's counts.
    await queue.prune(now + DAY * 0.5, DAY, DAY * 30)
    assert await queue.daily_counts(today - 2) == {}
    assert (await queue.daily_counts(today))[("127.0.0.2", "google")] == 3


async def test_prune_drops_old_attempts(queue: Queue) -> None:
    now = time.time()
    m = message()
    await queue.enqueue_many([m])
    lease = await queue.register_worker()
    await queue.claim(lease, 10, now)
    await queue.record_outcomes(lease, [delivered(m.id, provider="google", attempted_at=now)])
    await queue.prune(now + 10, 60, 7 * DAY)
    assert len((await queue.attempts([m.id]))[m.id]) == 1
    await queue.prune(now + 120, 60, 7 * DAY)
    assert (await queue.attempts([m.id]))[m.id] == []


async def test_warmup_progress_is_kept(make_queue: MakeQueue) -> None:
    queue = await make_queue()
    assert await queue.warmup_progress() == []
    await queue.save_warmup_progress(
        [WarmupRecord("198.51.100.7", "standard", 2, 20500), WarmupRecord("::1", "fast", 1, 20499)]
    )
    await queue.save_warmup_progress([WarmupRecord("198.51.100.7", "standard", 3, 20501)])
    await make_queue.crash(queue)
    again = await make_queue()
    assert set(await again.warmup_progress()) == {
        WarmupRecord("198.51.100.7", "standard", 3, 20501),
        WarmupRecord("::1", "fast", 1, 20499),
    }


async def test_an_older_sqlite_file_gets_the_provider_column(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    queue = SqliteQueue(path)
    await queue.open()
    await queue.enqueue_many([message()])
    await queue.close()
    # The file as written before the column existed: the table rebuilt without it.
    old = schema().split("CREATE TABLE IF NOT EXISTS messages (")[1].split(");")[0]
    old = "\n".join(line for line in old.splitlines() if "provider" not in line)
    old = old.rstrip().rstrip(",")
    with sqlite3.connect(path) as conn:
        conn.executescript(
            f"""
            CREATE TABLE messages_old ({old}
            );
            INSERT INTO messages_old SELECT {", ".join(_columns(conn, "messages")[:-1])}
                FROM messages;
            DROP TRIGGER messages_drop_body;
            DROP TABLE messages;
            ALTER TABLE messages_old RENAME TO messages;
            """
        )
        assert "provider" not in _columns(conn, "messages")
    for _ in range(2):  # and opening twice adds it once
        queue = SqliteQueue(path)
        await queue.open()
        lease = await queue.register_worker()
        (m,) = await queue.claim(lease, 10, time.time())
        await queue.record_outcomes(lease, [not_now(m.id, "google", 0.0)])
        assert (await queue.get([m.id]))[0].provider == "google"
        await queue.close()


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
