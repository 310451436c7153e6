"""Webhooks end to end on every backend: endpoints registered through the API, a real
`WebhookSender` posting to real receivers on loopback that fail now and then (5xx, a
timeout, Retry-After, a redirect, a slow answer, 410), every signature verified with the
Standard Webhooks reference library; batches in outbox order, frozen across retries, one
account's failing endpoint stalling only itself, replay, and addresses checked at connect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from dispatcher.config import WebhooksConfig
from dispatcher.events.sender import WebhookSender
from queues.protocol import Event, MessageState, OutcomeRecord, Queue
from tests.integration.api.conftest import BACKENDS, Api, start_api
from tests.support.polling import until
from tests.support.queues import delivered, message
from tests.support.webhook_receiver import WebhookReceiver

FAST = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def api(tmp_path: Path, backend: str) -> AsyncIterator[Api]:
    async for a in start_api(tmp_path, backend):
        yield a


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., object]]:
    made: list[WebhookReceiver] = []

    async def make(plan: Callable[[int], str], **kw: object) -> WebhookReceiver:
        r = await WebhookReceiver(plan, **kw).start()  # type: ignore[arg-type]
        made.append(r)
        return r

    yield make
    for r in made:
        await r.close()


def sender_config(api: Api, **changes: object) -> WebhooksConfig:
    base = dataclasses.replace(
        api.config.webhooks, retry_schedule=FAST, timeout=1.0, poll_interval=0.05,
        failing_after=3,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def register(api: Api, account: str, receiver: WebhookReceiver, **body: object) -> str:
    client = await api.keyed(account, "full")
    r = await client.post("/v1/webhooks", json={"url": receiver.url, **body})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["secret"].startswith("whsec_") and doc["account_id"] == account
    receiver.secret = doc["secret"]
    wid: str = doc["id"]
    return wid


async def outcomes(queue: Queue, account: str, n: int, start: int) -> list[str]:
    """`n` messages of `account` with an outcome event each (some bounced, some deferred
    then delivered: two events for one message, in order)."""
    msgs = [message(start + i, account=account) for i in range(n)]
    await queue.enqueue_many(msgs)
    lease = await queue.register_worker()
    now = time.time()
    await queue.claim(lease, n, now)
    await queue.mark_committing(lease, [m.id for m in msgs])
    records = []
    for i, m in enumerate(msgs):
        if i % 5 == 1:
            records.append(
                OutcomeRecord(m.id, MessageState.BOUNCED, reply_code=550, reply_text="5.1.1 no")
            )
        elif i % 5 == 2:
            records.append(OutcomeRecord(m.id, MessageState.DEFERRED, retry_at=now, reply_code=421))
        else:
            records.append(delivered(m.id))
    await queue.record_outcomes(lease, records)
    deferred = [m for i, m in enumerate(msgs) if i % 5 == 2]
    if deferred:
        claimed = await queue.claim(lease, n, time.time() + 1)
        await queue.mark_committing(lease, [c.id for c in claimed])
        await queue.record_outcomes(lease, [delivered(c.id) for c in claimed])
    return [m.id for m in msgs]


async def account_events(queue: Queue, account: str) -> list[Event]:
    out: list[Event] = []
    after = 0
    while page := await queue.read_events(after, 1000):
        out += [e for e in page if e.account == account and e.kind.startswith("message.")]
        after = page[-1].seq
    return out


async def test_signed_batches_in_order_through_failures(
    api: Api, receivers: Callable[..., object]
) -> None:
    flaky = {0: "500", 1: "timeout", 3: "retry_after", 4: "slow", 5: "redirect", 7: "503"}
    acme_rx: WebhookReceiver = await receivers(lambda n: flaky.get(n, "ok"))  # type: ignore[operator]
    down_rx: WebhookReceiver = await receivers(lambda n: "500")  # type: ignore[operator]
    acme_hook = await register(api, "acme", acme_rx, batch_size=7)
    down_hook = await register(api, "creator", down_rx)
    await outcomes(api.queue, "acme", 40, 1000)
    await outcomes(api.queue, "creator", 10, 2000)
    expected = [e.id for e in await account_events(api.queue, "acme")]
    assert len(expected) == 48  # 40 outcomes + 8 deliveries after a deferral

    stop = asyncio.Event()
    sender = WebhookSender(api.queue, sender_config(api))
    task = asyncio.create_task(sender.run(stop))
    try:

        async def all_in() -> bool:
            return sum(len(r.events) for r in acme_rx.delivered()) >= len(expected)

        await until(all_in, 120)

        async def down_failing() -> bool:
            doc = (await api.admin.get(f"/v1/webhooks/{down_hook}")).json()
            return bool(doc["failing"])

        await until(down_failing, 120)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)

    # Every request of both endpoints carried a valid Standard Webhooks signature.
    assert acme_rx.requests and all(r.verified for r in acme_rx.requests)
    assert down_rx.requests and all(r.verified for r in down_rx.requests)
    # In order, each event once among the 2xx answers, batches of at most 7, only acme's.
    got = [e["id"] for r in acme_rx.delivered() for e in r.events]
    assert got == expected
    assert all(1 <= len(r.events) <= 7 for r in acme_rx.requests)
    assert {e["account"] for r in acme_rx.requests for e in r.events} == {"acme"}
    # A batch keeps its id and body across retries, and is re-signed at each attempt.
    by_id: dict[str, list[bytes]] = {}
    for r in acme_rx.requests:
        by_id.setdefault(r.webhook_id, []).append(r.body)
    assert all(len(set(bodies)) == 1 for bodies in by_id.values())
    for i, r in enumerate(acme_rx.requests[:-1]):
        nxt = acme_rx.requests[i + 1]
        if r.action in ("ok", "slow"):
            assert nxt.webhook_id != r.webhook_id
        else:
            assert nxt.webhook_id == r.webhook_id, (r.action, i)  # the same batch again
    assert len(by_id) == len(acme_rx.delivered())
    # Retry-After: 1 was honoured (the schedule alone would have retried within 0.25 s).
    ra = next(i for i, r in enumerate(acme_rx.requests) if r.action == "retry_after")
    assert acme_rx.requests[ra + 1].at - acme_rx.requests[ra].at >= 0.9
    # A message's events keep their order (deferred before delivered).
    first = acme_rx.delivered()[0].events[0]
    assert set(first) >= {"id", "type", "account", "message_id", "campaign", "metadata", "at"}

    acme = (await api.admin.get(f"/v1/webhooks/{acme_hook}")).json()
    assert acme["failing"] is False and acme["delivered_events"] == len(expected)
    assert acme["pending_batch"] is None
    down = (await api.admin.get(f"/v1/webhooks/{down_hook}")).json()
    assert down["failing"] is True and down["last_status"] == 500 and down["attempts"] >= 3
    assert down["delivered_events"] == 0
    kinds = [e.kind for e in await api.queue.read_events(0, 10_000) if e.account == "creator"]
    assert "webhook.failing" in kinds


async def test_gone_disables_and_replay_resends(api: Api, receivers: Callable[..., object]) -> None:
    gone_rx: WebhookReceiver = await receivers(lambda n: "410")  # type: ignore[operator]
    rx: WebhookReceiver = await receivers(lambda n: "ok")  # type: ignore[operator]
    gone = await register(api, "creator", gone_rx)
    hook = await register(api, "acme", rx, batch_size=50)
    await outcomes(api.queue, "acme", 12, 3000)
    await outcomes(api.queue, "creator", 3, 4000)
    expected = [e.id for e in await account_events(api.queue, "acme")]
    stop = asyncio.Event()
    task = asyncio.create_task(WebhookSender(api.queue, sender_config(api)).run(stop))
    try:

        async def count_is(n: int) -> bool:
            return sum(len(r.events) for r in rx.delivered()) >= n

        await until(lambda: count_is(len(expected)), 120)
        client = await api.keyed("acme", "full")
        r = await client.post(f"/v1/webhooks/{hook}/replay", params={"from": "0"})
        assert r.status_code == 202, r.text
        await until(lambda: count_is(2 * len(expected)), 120)
        await asyncio.sleep(0.3)  # room for a (wrong) second request to the gone endpoint
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    got = [e["id"] for r in rx.delivered() for e in r.events]
    assert got == expected + expected  # the replay resent the window, in order
    assert len({r.webhook_id for r in rx.requests}) == len(rx.requests)  # new batches
    assert len(gone_rx.requests) == 1 and gone_rx.requests[0].verified
    doc = (await api.admin.get(f"/v1/webhooks/{gone}")).json()
    assert doc["disabled"] == "gone"
    bad = await client.post(f"/v1/webhooks/{hook}/replay", params={"from": "x"})
    assert (bad.status_code, bad.json()["field"]) == (422, "from")


async def test_private_addresses_refused_at_connect_unless_allowed(
    api: Api, receivers: Callable[..., object]
) -> None:
    rx: WebhookReceiver = await receivers(lambda n: "ok")  # type: ignore[operator]
    hook = await register(api, "acme", rx)
    await outcomes(api.queue, "acme", 3, 5000)
    stop = asyncio.Event()
    # The API allowed the loopback URL (tests' config); this sender does not.
    strict = WebhookSender(api.queue, sender_config(api, allow_private=False))
    task = asyncio.create_task(strict.run(stop))
    try:

        async def refused() -> bool:
            doc = (await api.admin.get(f"/v1/webhooks/{hook}")).json()
            return doc["last_error"] == "refused" and doc["attempts"] >= 2

        await until(refused, 120)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    assert rx.requests == []  # never connected


async def test_registration_checks(api: Api) -> None:
    client = await api.keyed("acme", "full")
    for body, field in (
        ({"url": "ftp://x.example/"}, "url"),
        ({"url": "https://x.example/", "event_types": ["nope"]}, "event_types"),
        ({"url": "https://x.example/", "batch_size": 0}, "batch_size"),
    ):
        r = await client.post("/v1/webhooks", json=body)
        assert (r.status_code, r.json()["field"]) == (422, field), r.text
    r = await client.post("/v1/webhooks", json={"url": "https://x.example/", "account": "creator"})
    assert r.status_code == 404
    # The secret is stored encrypted: not in the endpoint's row.
    r = await client.post("/v1/webhooks", json={"url": "https://x.example/h"})
    secret = r.json()["secret"]
    (row,) = await api.queue.list_webhooks(webhook_id=r.json()["id"])
    assert secret not in row.doc and secret.removeprefix("whsec_") not in row.doc
    assert "secret" not in (await client.get(f"/v1/webhooks/{row.id}")).json() or (
        (await client.get(f"/v1/webhooks/{row.id}")).json()["secret"] is None
    )
