"""Suppression lists in the store, held against every backend: per-account lists and the
platform-wide hard-bounce list, and their enforcement at enqueue, at claim (mail already
queued) and at the committing mark (the final gate).

Written only against queues.protocol, like the conformance suite beside it.
"""

from __future__ import annotations

import time

import pytest

from queues.protocol import MessageState, Queue
from queues.suppressions import (
    PLATFORM,
    Suppression,
    SuppressionError,
    SuppressionReason,
    make_suppression,
    normalize_address,
)
from tests.integration.queues.test_event_outbox import all_events
from tests.support.queues import delivered, message


def entry(address: str, reason: str = "unsubscribe", account: str = "acme") -> Suppression:
    return make_suppression(account, address, reason, "test", time.time())


async def states(queue: Queue, *ids: str) -> list[MessageState]:
    return [r.state for r in await queue.get(list(ids))]


def test_addresses_are_checked_and_ascii_lowercased() -> None:
    assert normalize_address("Reader@Example.COM") == "reader@example.com"
    # Only ASCII folds: the SQL side (SQLite lower(), PostgreSQL "C") folds only ASCII too.
    assert normalize_address("Ülla@Example.com") == "Ülla@example.com"
    for bad in ("", "no-at", "a@b", "a b@example.com", "x" * 321, "@example.com"):
        with pytest.raises(SuppressionError) as err:
            normalize_address(bad)
        assert err.value.field == "address"
    with pytest.raises(SuppressionError) as err:
        make_suppression("acme", "a@example.com", "spite", "", 0.0, where="items[3]")
    assert err.value.field == "items[3].reason"
    with pytest.raises(SuppressionError) as err:
        make_suppression(PLATFORM, "a@example.com", "unsubscribe", "", 0.0)
    assert err.value.field == "reason"


async def test_put_get_list_delete(queue: Queue) -> None:
    assert await queue.get_suppression("acme", "a@example.com") is None
    n = await queue.put_suppressions(
        [entry("b@example.com"), entry("a@example.com", "complaint"), entry("c@example.com")]
    )
    assert n == 3
    got = await queue.get_suppression("acme", "a@example.com")
    assert got is not None and (got.reason, got.source, got.platform) == (
        SuppressionReason.COMPLAINT,
        "test",
        False,
    )
    # Another account does not see acme's list.
    assert await queue.get_suppression("creator", "a@example.com") is None
    # Replacing an entry keeps one row with the new reason.
    await queue.put_suppressions([entry("a@example.com", "manual")])
    got = await queue.get_suppression("acme", "a@example.com")
    assert got is not None and got.reason is SuppressionReason.MANUAL
    page = await queue.list_suppressions("acme", limit=2)
    assert [e.address for e in page] == ["a@example.com", "b@example.com"]
    rest = await queue.list_suppressions("acme", after=page[-1].address, limit=2)
    assert [e.address for e in rest] == ["c@example.com"]
    assert await queue.delete_suppression("acme", "b@example.com") is True
    assert await queue.delete_suppression("acme", "b@example.com") is False
    assert await queue.delete_suppression("creator", "a@example.com") is False
    assert [e.address for e in await queue.list_suppressions("acme")] == [
        "a@example.com",
        "c@example.com",
    ]


async def test_platform_list_applies_to_every_account(queue: Queue) -> None:
    await queue.put_suppressions([entry("dead@example.com", "hard_bounce", PLATFORM)])
    for account in ("acme", "creator"):
        got = await queue.get_suppression(account, "dead@example.com")
        assert got is not None and got.platform and got.reason is SuppressionReason.HARD_BOUNCE
    # The account's own entry is reported first; deleting it leaves the platform one.
    await queue.put_suppressions([entry("dead@example.com", "unsubscribe")])
    own = await queue.get_suppression("acme", "dead@example.com")
    assert own is not None and not own.platform
    assert await queue.delete_suppression("acme", "dead@example.com")
    left = await queue.get_suppression("acme", "dead@example.com")
    assert left is not None and left.platform
    assert [e.address for e in await queue.list_suppressions(PLATFORM)] == ["dead@example.com"]


async def test_enqueue_to_a_suppressed_address_is_stored_suppressed_with_an_event(
    queue: Queue,
) -> None:
    await queue.put_suppressions(
        [entry("gone@gmail.example"), entry("dead@gmail.example", "hard_bounce", PLATFORM)]
    )
    mine = message(rcpt="Gone@Gmail.Example")  # case-insensitive
    dead = message(account="creator", rcpt="dead@gmail.example")
    other = message(account="creator", rcpt="gone@gmail.example")  # acme's list only
    fine = message()
    results = await queue.enqueue_many([mine, dead, other, fine])
    assert all(r.created for r in results)
    assert await states(queue, mine.id, dead.id, other.id, fine.id) == [
        MessageState.SUPPRESSED,
        MessageState.SUPPRESSED,
        MessageState.QUEUED,
        MessageState.QUEUED,
    ]
    events = {e.message_id: e for e in await all_events(queue) if e.kind == "message.suppressed"}
    assert set(events) == {mine.id, dead.id}
    assert dict(events[mine.id].data) == {"reason": "unsubscribe", "scope": "account"}
    assert events[mine.id].account == "acme"
    assert dict(events[dead.id].data) == {"reason": "hard_bounce", "scope": "platform"}
    # Never handed out; the same enqueue again is deduplicated, not re-suppressed twice.
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, 10, time.time())
    assert {c.id for c in claimed} == {other.id, fine.id}
    again = await queue.enqueue_many([mine])
    assert (again[0].id, again[0].created) == (mine.id, False)
    assert [v.state for v in await queue.describe([mine.id])] == [MessageState.SUPPRESSED]
    assert await queue.active_count() == 2


async def test_mail_already_queued_is_settled_at_claim(queue: Queue) -> None:
    a, b, c = message(), message(), message()
    await queue.enqueue_many([a, b, c])
    # The unsubscribe arrives while the broadcast waits.
    await queue.put_suppressions([entry(b.rcpt)])
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, 2, time.time())
    # b is settled and another message is claimed in its place.
    assert {m.id for m in claimed} == {a.id, c.id}
    assert await states(queue, b.id) == [MessageState.SUPPRESSED]
    kinds = [(e.kind, e.message_id) for e in await all_events(queue)]
    assert ("message.suppressed", b.id) in kinds


async def test_the_committing_mark_is_refused_and_the_message_settled(queue: Queue) -> None:
    a, b = message(), message()
    await queue.enqueue_many([a, b])
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, 10, time.time())
    assert {m.id for m in claimed} == {a.id, b.id}
    # Suppressed while its session was under way: the final gate refuses it.
    await queue.put_suppressions([entry(b.rcpt, "complaint")])
    granted = await queue.mark_committing(lease, [a.id, b.id])
    assert granted == {a.id}
    assert await states(queue, a.id, b.id) == [MessageState.COMMITTING, MessageState.SUPPRESSED]
    # The session's later outcome for b is fenced off: it stays suppressed, never resent.
    applied = await queue.record_outcomes(
        lease,
        [
            delivered(a.id),
            # What an engine records for a refused mark: the message back to the queue.
            delivered(b.id),
        ],
    )
    assert applied == 1
    assert await states(queue, a.id, b.id) == [MessageState.DELIVERED, MessageState.SUPPRESSED]
    assert await queue.claim(lease, 10, time.time()) == []
    # Once committing, its dot may be out: a later suppression never settles it.
    c = message()
    await queue.enqueue_many([c])
    assert [m.id for m in await queue.claim(lease, 10, time.time())] == [c.id]
    assert await queue.mark_committing(lease, [c.id]) == {c.id}
    await queue.put_suppressions([entry(c.rcpt)])
    await queue.mark_committing(lease, [c.id])  # a repeat after a lost reply
    assert await states(queue, c.id) == [MessageState.COMMITTING]
    events = [e for e in await all_events(queue) if e.kind == "message.suppressed"]
    assert [e.message_id for e in events] == [b.id]
    assert dict(events[0].data) == {"reason": "complaint", "scope": "account"}


async def test_cancel_goes_in_batches_with_events(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    import queues.postgres.backend as pg
    import queues.sqlite.backend as lite

    # Small batches, so that several are needed (the contract is the same at 5,000).
    monkeypatch.setattr(pg, "CANCEL_BATCH", 3)
    monkeypatch.setattr(lite, "CANCEL_BATCH", 3)
    spring = [message(campaign="spring") for _ in range(8)]
    other = [message(campaign="autumn") for _ in range(2)]
    await queue.enqueue_many(spring + other)
    lease = await queue.register_worker()
    await queue.claim(lease, 1, time.time())  # one of them is being sent: left alone
    assert await queue.cancel("acme", "spring") == 7
    assert await queue.cancel("acme", "spring") == 0
    got = await queue.get([m.id for m in spring + other])
    by_state = sorted(r.state.value for r in got)
    assert by_state.count("cancelled") == 7 and by_state.count("queued") == 2
    events = [e for e in await all_events(queue) if e.kind == "message.cancelled"]
    assert len(events) == 7 and {e.message_id for e in events} <= {m.id for m in spring}
    assert all(e.data["campaign"] == "spring" and e.account == "acme" for e in events)


async def test_a_cancelled_campaigns_mail_in_flight_is_refused_at_the_mark(queue: Queue) -> None:
    a, b, c = message(campaign="oops"), message(campaign="oops"), message(campaign="fine")
    await queue.enqueue_many([a, b, c])
    lease = await queue.register_worker()
    claimed = await queue.claim(lease, 10, time.time())
    assert len(claimed) == 3
    assert await queue.mark_committing(lease, [a.id]) == {a.id}  # its dot may be out
    # The mistyped broadcast is cancelled while b is on its way: nothing waits any more...
    assert await queue.cancel("acme", "oops") == 0
    # ...and b's mark is refused: settled cancelled, never sent.
    assert await queue.mark_committing(lease, [b.id, c.id]) == {c.id}
    assert await states(queue, a.id, b.id, c.id) == [
        MessageState.COMMITTING,
        MessageState.CANCELLED,
        MessageState.COMMITTING,
    ]
    assert await queue.record_outcomes(lease, [delivered(x) for x in (a.id, b.id, c.id)]) == 2
    assert await states(queue, b.id) == [MessageState.CANCELLED]
    events = [e for e in await all_events(queue) if e.kind == "message.cancelled"]
    assert [(e.message_id, e.data["reason"]) for e in events] == [(b.id, "campaign_cancelled")]
    # Mail of the campaign enqueued after the cancel is sent (a new broadcast, same name).
    d = message(campaign="oops")
    await queue.enqueue_many([d])
    (claimed_d,) = await queue.claim(lease, 10, time.time())
    assert await queue.mark_committing(lease, [claimed_d.id]) == {d.id}


async def test_a_paused_accounts_mail_is_held_and_released_at_resume(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    import queues.postgres.backend as pg
    import queues.sqlite.backend as lite
    from queues.accounts import AccountSeed, AccountStatus

    monkeypatch.setattr(pg, "CANCEL_BATCH", 2)
    monkeypatch.setattr(lite, "CANCEL_BATCH", 2)
    await queue.seed_accounts([AccountSeed("acme", (), None), AccountSeed("creator", (), None)])
    now = time.time()
    waiting = [message() for _ in range(5)]
    later = message(due_at=now + 3600)
    theirs = message(account="creator")
    in_flight, granted = message(), message()
    await queue.enqueue_many([in_flight, granted])
    lease = await queue.register_worker()
    assert len(await queue.claim(lease, 10, now)) == 2
    assert await queue.mark_committing(lease, [granted.id]) == {granted.id}
    await queue.enqueue_many([*waiting, later, theirs])
    await queue.set_account_status("acme", AccountStatus.PAUSED)
    # Enqueues while paused are accepted, and held like the waiting mail.
    new = message()
    assert (await queue.enqueue_many([new]))[0].created
    assert [m.id for m in await queue.claim(lease, 100, now + 7200)] == [theirs.id]
    # A session under way: its mark is refused, the message goes back to the queue (held);
    # one whose mark was granted before the pause finishes.
    assert await queue.mark_committing(lease, [in_flight.id]) == set()
    assert await states(queue, in_flight.id, granted.id) == [
        MessageState.QUEUED,
        MessageState.COMMITTING,
    ]
    assert await queue.record_outcomes(lease, [delivered(granted.id), delivered(in_flight.id)]) == 1
    assert await queue.claim(lease, 100, now + 7200) == []
    # A second pause (or a repeated walk) moves nothing twice; resume restores due times.
    await queue.set_account_status("acme", AccountStatus.PAUSED)
    await queue.set_account_status("acme", AccountStatus.ACTIVE)
    back = {m.id for m in await queue.claim(lease, 100, now + 60)}
    assert back == {m.id for m in [*waiting, new, in_flight]}
    assert [m.id for m in await queue.claim(lease, 100, now + 7200)] == [later.id]
