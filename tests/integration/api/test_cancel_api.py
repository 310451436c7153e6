"""Campaign cancel over HTTP and `accounts purge`, on both backends: waiting messages
become `cancelled` with their events, another account's campaign of the same name is
untouched, and mail of the campaign already being sent is refused at its mark."""

from __future__ import annotations

import time

from tests.integration.api.conftest import Api
from tests.integration.api.test_messages_api import payload


async def _send(client: object, n: int, **extra: object) -> list[str]:
    ids = []
    for i in range(n):
        r = await client.post("/v1/messages", json=payload(i, **extra))  # type: ignore[attr-defined]
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


async def test_cancel_a_campaign_during_a_send(api: Api) -> None:
    acme = await api.keyed("acme", "full")
    creator = await api.keyed("creator", "full")
    oops = await _send(acme, 6, campaign="oops")
    keep = await _send(acme, 2, campaign="keep")
    theirs = await _send(creator, 2, campaign="oops", **{"from": "x@creator-letters.example"})
    # An engine has taken some of the broadcast and is sending them.
    lease = await api.queue.register_worker()
    in_flight = [m for m in await api.queue.claim(lease, 4, time.time())]
    r = await acme.post("/v1/campaigns/oops/cancel")
    assert r.status_code == 200, r.text
    waiting = 6 - sum(1 for m in in_flight if m.id in oops)
    assert r.json() == {"campaign": "oops", "cancelled": waiting}
    # The ones in flight are refused at the final gate, the other campaign's are not.
    granted = await api.queue.mark_committing(lease, [m.id for m in in_flight])
    assert granted == {m.id for m in in_flight if m.id not in oops}
    states = {mid: (await acme.get(f"/v1/messages/{mid}")).json()["state"] for mid in oops + keep}
    assert all(states[mid] == "cancelled" for mid in oops), states
    assert all(states[mid] in ("queued", "committing") for mid in keep), states
    for mid in theirs:
        assert (await creator.get(f"/v1/messages/{mid}")).json()["state"] == "queued"
    events = [e for e in await api.queue.read_events(0, 1000) if e.kind == "message.cancelled"]
    assert sorted(e.message_id for e in events) == sorted(oops)  # type: ignore[type-var]
    # The admin names the account; an unknown one is a 404.
    r = await api.admin.post("/v1/campaigns/oops/cancel", params={"account": "creator"})
    assert r.json()["cancelled"] == 2
    r = await api.admin.post("/v1/campaigns/oops/cancel", params={"account": "nope"})
    assert r.status_code == 404
    r = await api.admin.post("/v1/campaigns/oops/cancel")
    assert (r.status_code, r.json()["field"]) == (422, "account")
