"""Every endpoint scoped, generated from the route table: an account sees and touches only
its own resources (another's is a 404), a send key only sends, the admin key manages.

A new route must be classified in `KIND` or the first test fails: none can be forgotten.
"""

from __future__ import annotations

from typing import Any

import httpx

from dispatcher.api.app import ENDPOINTS, Endpoint
from tests.integration.api.conftest import Api
from tests.integration.api.test_messages_api import payload

# How each route is reached for another account: by a path parameter, by a query
# parameter, by the payload's account (sending); or it has no account at all.
KIND = {
    ("POST", "/v1/messages"): "payload",
    ("POST", "/v1/messages/batch"): "payload",
    ("GET", "/v1/messages"): "query",
    ("GET", "/v1/messages/{message_id}"): "path",
    ("POST", "/v1/accounts"): "admin",
    ("GET", "/v1/accounts"): "admin",
    ("GET", "/v1/accounts/{account_id}"): "path",
    ("PATCH", "/v1/accounts/{account_id}"): "path",
    ("POST", "/v1/accounts/{account_id}/keys"): "path",
    ("GET", "/v1/accounts/{account_id}/keys"): "path",
    ("DELETE", "/v1/accounts/{account_id}/keys/{key_id}"): "path",
    ("GET", "/v1/suppressions"): "query",
    ("POST", "/v1/suppressions/import"): "query",
    ("GET", "/v1/suppressions/{address}"): "query",
    ("PUT", "/v1/suppressions/{address}"): "query",
    ("DELETE", "/v1/suppressions/{address}"): "query",
    ("POST", "/v1/campaigns/{campaign}/cancel"): "query",
    ("POST", "/v1/webhooks"): "body_account",
    ("GET", "/v1/webhooks/{webhook_id}"): "path",
    ("POST", "/v1/webhooks/{webhook_id}/replay"): "path",
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/metrics"): "public",
    ("GET", "/openapi.json"): "public",
}
BODIES: dict[str, Any] = {
    "/v1/accounts/{account_id}": {"name": "taken over"},
    "/v1/accounts/{account_id}/keys": {"scope": "full"},
}


def test_every_route_is_classified() -> None:
    table = {(e.method, e.path) for e in ENDPOINTS}
    assert table == set(KIND), f"classify the new routes: {table ^ set(KIND)}"


async def _resources(api: Api) -> dict[str, dict[str, str]]:
    """A message and a key of each of two accounts."""
    out: dict[str, dict[str, str]] = {}
    for account, author in (("acme", "acme-news.example"), ("creator", "creator-letters.example")):
        client = await api.keyed(account, "full")
        r = await client.post("/v1/messages", json=payload(1, **{"from": f"x@{author}"}))
        assert r.status_code == 202, r.text
        keys = (await client.get(f"/v1/accounts/{account}/keys")).json()["data"]
        hook = await client.post("/v1/webhooks", json={"url": "https://hooks.example.com/x"})
        assert hook.status_code == 201, hook.text
        out[account] = {
            "webhook_id": hook.json()["id"],
            "account_id": account,
            "message_id": r.json()["id"],
            "key_id": keys[0]["id"],
            "address": "reader@example.com",
            "campaign": "spring",
        }
    return out


async def _call(client: httpx.AsyncClient, e: Endpoint, params: dict[str, str]) -> httpx.Response:
    path = e.path.format(**params)
    body = BODIES.get(e.path)
    return await client.request(e.method, path, json=body)


async def test_another_accounts_resources_are_404_on_every_route(api: Api) -> None:
    res = await _resources(api)
    mine = await api.keyed("acme", "full")
    checked = 0
    for e in ENDPOINTS:
        kind = KIND[(e.method, e.path)]
        if kind == "path":
            r = await _call(mine, e, res["creator"])
            assert r.status_code == 404, (e.method, e.path, r.status_code, r.text)
            assert r.json()["code"] == "not_found"
            checked += 1
        elif kind == "query":
            path = e.path.format(**res["creator"])
            r = await mine.request(e.method, path, params={"account": "creator"})
            assert r.status_code == 404, (e.path, r.text)
            checked += 1
        elif kind == "payload":
            body: Any = payload(9, account="creator")
            if e.path.endswith("/batch"):
                r = await mine.post(e.path, json={"messages": [body]})
                assert r.status_code == 422, r.text
                assert r.json()["errors"][0]["code"] == "account_mismatch"
            else:
                r = await mine.post(e.path, json=body)
                assert r.status_code == 403 and r.json()["code"] == "account_mismatch"
            checked += 1
        elif kind == "body_account":
            body = {"url": "https://hooks.example.com/y", "account": "creator"}
            r = await mine.post(e.path, json=body)
            assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
            checked += 1
        elif kind == "admin":
            r = await mine.request(e.method, e.path, json={"name": "x"})
            assert r.status_code == 403 and r.json()["code"] == "admin_only", e.path
            checked += 1
    assert checked == sum(1 for k in KIND.values() if k != "public")
    # Nothing of creator's changed: its key still works, its name is its own.
    theirs = (await api.admin.get("/v1/accounts/creator")).json()
    assert theirs["name"] == "creator"
    keys = (await api.admin.get("/v1/accounts/creator/keys")).json()["data"]
    assert keys[0]["revoked_at"] is None
    # The same calls on acme's own resources succeed (so the 404s above were scoping).
    for e in ENDPOINTS:
        if KIND[(e.method, e.path)] == "path" and e.method == "GET":
            r = await _call(mine, e, res["acme"])
            assert r.status_code == 200, (e.path, r.text)


async def test_scopes(api: Api) -> None:
    res = await _resources(api)
    sender = await api.keyed("acme", "send")
    assert (await sender.post("/v1/messages", json=payload(5))).status_code == 202
    for e in ENDPOINTS:
        kind = KIND[(e.method, e.path)]
        if e.auth == "full" and kind == "path":
            r = await _call(sender, e, res["acme"])
            assert (r.status_code, r.json()["code"]) == (403, "insufficient_scope"), e.path
    r = await sender.get("/v1/messages")
    assert (r.status_code, r.json()["code"]) == (403, "insufficient_scope")
    # No key, a wrong key, a revoked key: 401 everywhere that needs one.
    anon = api.client()
    wrong = api.client("mdk_key_0123456789abcdef_" + "A" * 43)
    for e in ENDPOINTS:
        if e.auth != "none":
            for c in (anon, wrong):
                r = await _call(c, e, res["acme"])
                assert r.status_code == 401, (e.path, r.status_code)
                assert r.headers["content-type"] == "application/problem+json"
    # The admin key manages and reads, but does not send.
    r = await api.admin.post("/v1/messages", json=payload(6, account="acme"))
    assert (r.status_code, r.json()["code"]) == (403, "account_key_required")
    r = await api.admin.get(f"/v1/messages/{res['creator']['message_id']}")
    assert r.status_code == 200
    # An account may not un-pause itself.
    own = await api.keyed("acme", "full")
    r = await own.patch("/v1/accounts/acme", json={"status": "active"})
    assert (r.status_code, r.json()["code"]) == (403, "admin_only")


async def test_revoked_key_stops_working(api: Api) -> None:
    token = await api.key("acme", "full")
    client = api.client(token)
    assert (await client.get("/v1/accounts/acme")).status_code == 200
    key_id = (await client.get("/v1/accounts/acme/keys")).json()["data"][0]["id"]
    r = await api.admin.delete(f"/v1/accounts/acme/keys/{key_id}")
    assert r.status_code == 204
    assert (await client.get("/v1/accounts/acme")).status_code == 401
    assert (await api.admin.delete(f"/v1/accounts/acme/keys/{key_id}")).status_code == 404
