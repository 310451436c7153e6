"""Suppression lists over HTTP on both backends: GET/PUT/DELETE one address, bulk import
and export by cursor, the admin's platform-wide list, and mail to a suppressed address
stored `suppressed` at enqueue (reported, never claimed)."""

from __future__ import annotations

import time

from tests.integration.api.conftest import Api
from tests.integration.api.test_messages_api import payload
from tests.support.api import DEST


async def test_put_get_delete_one_address(api: Api) -> None:
    acme = await api.keyed("acme", "full")
    address = f"Reader1@{DEST.upper()}"
    assert (await acme.get(f"/v1/suppressions/{address}")).status_code == 404
    r = await acme.put(
        f"/v1/suppressions/{address}", json={"reason": "unsubscribe", "source": "footer link"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["address"], body["reason"], body["source"], body["scope"]) == (
        f"reader1@{DEST}",
        "unsubscribe",
        "footer link",
        "account",
    )
    got = (await acme.get(f"/v1/suppressions/reader1@{DEST}")).json()
    assert got["reason"] == "unsubscribe" and got["created_at"] == body["created_at"]
    # Another account's list is its own.
    creator = await api.keyed("creator", "full")
    assert (await creator.get(f"/v1/suppressions/reader1@{DEST}")).status_code == 404
    assert (await creator.delete(f"/v1/suppressions/reader1@{DEST}")).status_code == 404
    assert (await acme.delete(f"/v1/suppressions/{address}")).status_code == 204
    assert (await acme.get(f"/v1/suppressions/{address}")).status_code == 404
    assert (await acme.delete(f"/v1/suppressions/{address}")).status_code == 404


async def test_bad_input_names_the_field_and_stores_nothing(api: Api) -> None:
    acme = await api.keyed("acme", "full")
    r = await acme.put("/v1/suppressions/not-an-address", json={"reason": "manual"})
    assert (r.status_code, r.json()["field"]) == (422, "address")
    r = await acme.put(f"/v1/suppressions/a@{DEST}", json={"reason": "spite"})
    assert (r.status_code, r.json()["field"]) == (422, "reason")
    r = await acme.post(
        "/v1/suppressions/import",
        json={"suppressions": [{"address": f"ok@{DEST}"}, {"address": "bad address"}]},
    )
    assert r.status_code == 422 and r.json()["field"] == "suppressions[1].address", r.text
    assert (await acme.get("/v1/suppressions")).json()["data"] == []
    # Only hard bounces go on the platform-wide list.
    r = await api.admin.put(f"/v1/suppressions/a@{DEST}", json={"reason": "unsubscribe"})
    assert (r.status_code, r.json()["field"]) == (422, "reason")


async def test_import_and_export_by_cursor(api: Api) -> None:
    acme = await api.keyed("acme", "full")
    items = [{"address": f"r{i:03d}@{DEST}", "reason": "complaint"} for i in range(25)]
    r = await acme.post("/v1/suppressions/import", json={"suppressions": items})
    assert (r.status_code, r.json()) == (200, {"imported": 25})
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "10", **({"cursor": cursor} if cursor else {})}
        page = (await acme.get("/v1/suppressions", params=params)).json()
        seen += [e["address"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [i["address"] for i in items]
    # The admin reads an account's list with ?account=, an unknown account is a 404.
    r = await api.admin.get("/v1/suppressions", params={"account": "acme", "limit": "5"})
    assert len(r.json()["data"]) == 5
    assert (await api.admin.get("/v1/suppressions", params={"account": "nope"})).status_code == 404


async def test_mail_to_a_suppressed_address_is_stored_suppressed(api: Api) -> None:
    acme = await api.keyed("acme", "full")
    creator = await api.keyed("creator", "full")
    await acme.put(f"/v1/suppressions/reader1@{DEST}", json={"reason": "unsubscribe"})
    # The platform-wide hard-bounce list (the admin key without ?account=) holds for all.
    r = await api.admin.put(f"/v1/suppressions/reader2@{DEST}", json={"reason": "hard_bounce"})
    assert r.status_code == 200 and r.json()["scope"] == "platform", r.text
    seen = (await creator.get(f"/v1/suppressions/reader2@{DEST}")).json()
    assert (seen["scope"], seen["reason"]) == ("platform", "hard_bounce")
    # An account cannot remove a platform entry: it is not on its own list.
    assert (await creator.delete(f"/v1/suppressions/reader2@{DEST}")).status_code == 404

    sent = {}
    for i in (1, 2, 3):
        r = await acme.post("/v1/messages", json=payload(i))
        assert r.status_code == 202, r.text
        sent[i] = r.json()["id"]
    r = await creator.post("/v1/messages", json=payload(1, **{"from": "x@creator-letters.example"}))
    theirs = r.json()["id"]
    states = {i: (await acme.get(f"/v1/messages/{mid}")).json() for i, mid in sent.items()}
    assert [states[i]["state"] for i in (1, 2, 3)] == ["suppressed", "suppressed", "queued"]
    assert states[1]["last_reply"]["text"] == "suppressed: unsubscribe"
    # acme's unsubscribe is acme's: creator's mail to reader1 waits to be sent.
    assert (await creator.get(f"/v1/messages/{theirs}")).json()["state"] == "queued"
    # Never handed to an engine.
    lease = await api.queue.register_worker()
    claimed = {m.id for m in await api.queue.claim(lease, 100, time.time())}
    assert claimed == {sent[3], theirs}
    events = await api.queue.read_events(0, 100)
    suppressed = {e.message_id for e in events if e.kind == "message.suppressed"}
    assert suppressed == {sent[1], sent[2]}
