"""POST /v1/messages, the batch, GET and the listing, over HTTP on both backends."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.api.conftest import Api, start_api
from tests.support.api import AUTHOR, DEST, SECOND_AUTHOR


def payload(i: int = 0, **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "from": f"Acme <news@{AUTHOR}>",
        "to": f"reader{i}@{DEST}",
        "subject": f"Hello {i}",
        "text": f"Hi reader {i}\n",
    }
    p.update(extra)
    return p


async def test_send_is_stored_and_reported_with_its_metadata(api: Api) -> None:
    acme = await api.keyed("acme", "full")
    meta = {"order": 1234, "tags": ["welcome"], "note": "é"}
    r = await acme.post(
        "/v1/messages",
        json=payload(1, metadata=meta, campaign="welcome"),
        headers={"Idempotency-Key": "order-1234"},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["account"], body["idempotency_key"], body["status"], body["metadata"]) == (
        "acme",
        "order-1234",
        "accepted",
        meta,
    )
    for h in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        assert h in r.headers
    # Durable before the 202: the store has it now.
    (view,) = await api.queue.describe([body["id"]])
    assert (view.account, view.state, json.loads(view.metadata or "")) == ("acme", "queued", meta)

    got = await acme.get(f"/v1/messages/{body['id']}")
    assert got.status_code == 200, got.text
    m = got.json()
    assert (m["id"], m["state"], m["metadata"], m["campaign"], m["attempts"]) == (
        body["id"],
        "queued",
        meta,
        "welcome",
        [],
    )
    assert m["rcpt"] == f"reader1@{DEST}" and m["attempt_count"] == 0
    listed = await acme.get("/v1/messages", params={"campaign": "welcome"})
    assert [x["id"] for x in listed.json()["data"]] == [body["id"]]
    assert listed.json()["data"][0]["metadata"] == meta


async def test_idempotency_replay_conflict_and_mismatch(api: Api) -> None:
    acme = await api.keyed("acme", "send")
    first = await acme.post("/v1/messages", json=payload(1), headers={"Idempotency-Key": "k-1"})
    again = await acme.post("/v1/messages", json=payload(1), headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    # The field works like the header.
    field = await acme.post("/v1/messages", json=payload(1, idempotency_key="k-1"))
    assert field.status_code == 202 and field.json()["id"] == first.json()["id"]

    other = await acme.post("/v1/messages", json=payload(2), headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 422
    problem = other.json()
    assert other.headers["content-type"] == "application/problem+json"
    assert (problem["code"], problem["field"], problem["status"]) == (
        "idempotency_conflict",
        "idempotency_key",
        422,
    )
    both = await acme.post(
        "/v1/messages", json=payload(3, idempotency_key="a"), headers={"Idempotency-Key": "b"}
    )
    assert (both.status_code, both.json()["field"]) == (422, "idempotency_key")
    assert len(await api.queue.list_messages("acme")) == 1


class GatedQueue:
    """The real store, with writes held until the test opens the gate (to catch a request
    in flight); everything else passes through."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()

    async def enqueue_each(self, messages: Any) -> Any:
        self.writing.set()
        await self.gate.wait()
        return await self._queue.enqueue_each(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


async def test_same_key_in_flight_is_409_then_replays(tmp_path: Path, backend: str) -> None:
    holder: list[GatedQueue] = []

    def wrap(q: Any) -> GatedQueue:
        holder.append(GatedQueue(q))
        return holder[0]

    async for api in start_api(tmp_path, backend, wrap=wrap):
        gated = holder[0]
        acme = await api.keyed("acme", "send")
        headers = {"Idempotency-Key": "race"}
        first = asyncio.create_task(acme.post("/v1/messages", json=payload(1), headers=headers))
        await asyncio.wait_for(gated.writing.wait(), 10)
        second = await acme.post("/v1/messages", json=payload(1), headers=headers)
        assert second.status_code == 409, second.text
        assert (second.json()["code"], second.json()["field"]) == (
            "idempotency_in_flight",
            "idempotency_key",
        )
        assert second.headers["Retry-After"] == "1"
        gated.gate.set()
        done = await first
        assert done.status_code == 202
        third = await acme.post("/v1/messages", json=payload(1), headers=headers)
        assert third.status_code == 202 and third.json()["id"] == done.json()["id"]
        assert len(await api.queue.list_messages("acme")) == 1


async def test_concurrent_requests_with_one_key_store_one_message(api: Api) -> None:
    acme = await api.keyed("acme", "send")
    headers = {"Idempotency-Key": "stampede"}
    replies = await asyncio.gather(
        *(acme.post("/v1/messages", json=payload(7), headers=headers) for _ in range(20))
    )
    codes = [r.status_code for r in replies]
    assert set(codes) <= {202, 409} and 202 in codes
    assert len({r.json()["id"] for r in replies if r.status_code == 202}) == 1
    assert len(await api.queue.list_messages("acme")) == 1


async def test_concurrent_sends_share_commits(api: Api) -> None:
    acme = await api.keyed("acme", "send")
    committer = api.live.services.committer
    before = committer.writes
    replies = await asyncio.gather(*(acme.post("/v1/messages", json=payload(i)) for i in range(60)))
    assert all(r.status_code == 202 for r in replies)
    assert committer.messages >= 60
    assert committer.writes - before < 60  # some requests shared a transaction
    assert len(await api.queue.list_messages("acme", limit=1000)) == 60


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{not json", 400, "invalid", "payload"),
        (b"[1, 2]", 400, "invalid", "payload"),
        (b'{"to": "a@dest.example", "to": "b@dest.example"}', 400, "duplicate", "to"),
        (b'{"subject": NaN}', 400, "invalid", "payload"),
        (b"\xff\xfe", 400, "invalid", "payload"),
    ],
)
async def test_unreadable_documents_are_400(
    api: Api, body: bytes, status: int, code: str, field: str
) -> None:
    acme = await api.keyed("acme", "send")
    r = await acme.post("/v1/messages", content=body, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (status, code, field)
    assert await api.queue.list_messages("acme") == []


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"bogus": 1}, "unknown_field", "bogus"),
        ({"to": "not an address"}, "invalid", "to"),
        ({"to": "a@dest.example, b@dest.example"}, "invalid", "to"),
        ({"subject": "hi\r\nBcc: victim@dest.example"}, "invalid", "subject"),
        ({"headers": {"Bcc": "victim@dest.example"}}, "forbidden_header", "headers.Bcc"),
        ({"from": f"x@{SECOND_AUTHOR}"}, "domain_not_allowed", "from"),
        ({"metadata": [1]}, "invalid", "metadata"),
        ({"priority": "high"}, "invalid", "priority"),
    ],
)
async def test_bad_fields_are_422_naming_the_field(
    api: Api, change: dict[str, Any], code: str, field: str
) -> None:
    acme = await api.keyed("acme", "send")
    r = await acme.post("/v1/messages", json=payload(1, **change))
    assert r.status_code == 422, r.text
    assert (r.json()["code"], r.json()["field"]) == (code, field)
    assert await api.queue.list_messages("acme") == []


async def test_oversized_body_is_413(tmp_path: Path, backend: str) -> None:
    async for api in start_api(tmp_path, backend, extra="max_request_bytes = 4096"):
        acme = await api.keyed("acme", "send")
        r = await acme.post("/v1/messages", json=payload(1, text="x" * 5000))
        assert (r.status_code, r.json()["code"], r.json()["field"]) == (413, "too_large", "body")

        # Without a Content-Length (chunked), the cap holds while reading.
        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 1000

        r = await acme.post("/v1/messages", content=chunks())
        assert r.status_code == 413
        assert await api.queue.list_messages("acme") == []


async def test_payload_naming_another_account_is_refused(api: Api) -> None:
    acme = await api.keyed("acme", "send")
    r = await acme.post("/v1/messages", json=payload(1, account="creator"))
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (
        403,
        "account_mismatch",
        "account",
    )
    ok = await acme.post("/v1/messages", json=payload(2, account="acme"))
    assert ok.status_code == 202
    assert [v.account for v in await api.queue.list_messages("acme")] == ["acme"]
    assert await api.queue.list_messages("creator") == []


async def test_paused_account_enqueues_are_accepted_and_held(api: Api) -> None:
    token = await api.key("acme", "send")
    waiting = await api.client(token).post("/v1/messages", json=payload(0))
    assert waiting.status_code == 202
    r = await api.admin.patch("/v1/accounts/acme", json={"status": "paused"})
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = await api.client(token).post("/v1/messages", json=payload(1))
    assert r.status_code == 202, r.text
    # Nothing of the account leaves while it is paused: neither the new nor the waiting mail.
    lease = await api.queue.register_worker()
    assert await api.queue.claim(lease, 10, time.time()) == []
    assert (await api.admin.patch("/v1/accounts/acme", json={"status": "active"})).status_code
    claimed = {m.id for m in await api.queue.claim(lease, 10, time.time())}
    assert claimed == {waiting.json()["id"], r.json()["id"]}


async def test_batch_stores_the_valid_items_and_reports_each(api: Api) -> None:
    acme = await api.keyed("acme", "send")
    items = [payload(i, idempotency_key=f"b-{i}") for i in range(100)]
    items[10]["to"] = "broken"
    items[20] = {**items[20], "bogus": True}
    items[30]["idempotency_key"] = "b-31"  # same key as item 31, another payload
    r = await acme.post("/v1/messages/batch", json={"messages": items})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["accepted"], out["duplicates"], out["failed"]) == (97, 0, 3)
    failed = {x["index"]: x["error"] for x in out["results"] if x["status"] == "failed"}
    assert failed[10]["field"] == "messages[10].to"
    assert failed[20]["code"] == "unknown_field"
    assert failed[31]["code"] == "idempotency_conflict"
    assert len(await api.queue.list_messages("acme", limit=1000)) == 97
    # Resent as a whole (a retry): the stored ones are duplicates, nothing new.
    again = (await acme.post("/v1/messages/batch", json={"messages": items})).json()
    assert (again["accepted"], again["duplicates"], again["failed"]) == (0, 97, 3)


async def test_batch_limits(tmp_path: Path, backend: str) -> None:
    async for api in start_api(tmp_path, backend, extra="max_batch = 5"):
        acme = await api.keyed("acme", "send")
        r = await acme.post("/v1/messages/batch", json={"messages": [payload(i) for i in range(6)]})
        assert (r.status_code, r.json()["field"]) == (422, "messages")
        r = await acme.post("/v1/messages/batch", json={"messages": []})
        assert (r.status_code, r.json()["field"]) == (422, "messages")
        r = await acme.post("/v1/messages/batch", json={"messages": [1, payload(1, to="x")]})
        assert (r.status_code, r.json()["code"], r.json()["field"]) == (
            422,
            "batch_rejected",
            "messages[0]",
        )
        assert [e["field"] for e in r.json()["errors"]] == ["messages[0]", "messages[1].to"]
        assert await api.queue.list_messages("acme") == []


async def test_listing_pages_by_cursor_and_filters(api: Api) -> None:
    acme = await api.keyed("acme", "full")
    for i in range(7):
        r = await acme.post("/v1/messages", json=payload(i, campaign="c1" if i % 2 else "c2"))
        assert r.status_code == 202
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await acme.get("/v1/messages", params=params)).json()
        seen += [m["id"] for m in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and seen == sorted(seen, reverse=True)
    c1 = (await acme.get("/v1/messages", params={"campaign": "c1"})).json()["data"]
    assert len(c1) == 3 and all(m["campaign"] == "c1" for m in c1)
    queued = (await acme.get("/v1/messages", params={"state": "queued"})).json()["data"]
    assert len(queued) == 7
    assert (await acme.get("/v1/messages", params={"state": "delivered"})).json()["data"] == []
    bad = await acme.get("/v1/messages", params={"state": "lost"})
    assert (bad.status_code, bad.json()["field"]) == (422, "state")
    bad = await acme.get("/v1/messages", params={"limit": "0"})
    assert (bad.status_code, bad.json()["field"]) == (422, "limit")
