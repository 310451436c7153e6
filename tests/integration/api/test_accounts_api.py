"""Accounts and keys through the API, rate limits, health and metrics."""

from __future__ import annotations

from pathlib import Path

from tests.integration.api.conftest import Api, start_api
from tests.integration.api.test_messages_api import payload
from tests.support.api import AUTHOR


async def test_operator_creates_an_account_and_a_key_shown_once(api: Api) -> None:
    r = await api.admin.post(
        "/v1/accounts", json={"name": "Newsletter Co", "author_domains": [AUTHOR]}
    )
    assert r.status_code == 201, r.text
    account = r.json()
    assert account["id"].startswith("acc_") and account["config_seeded"] is False
    assert account["trusted"] is False and account["status"] == "active"

    r = await api.admin.post(f"/v1/accounts/{account['id']}/keys", json={"scope": "send"})
    assert r.status_code == 201 and r.headers["Cache-Control"] == "no-store"
    token = r.json()["token"]
    listed = await api.admin.get(f"/v1/accounts/{account['id']}/keys")
    assert token not in listed.text and len(listed.json()["data"]) == 1

    sent = await api.client(token).post("/v1/messages", json=payload(1))
    assert sent.status_code == 202 and sent.json()["account"] == account["id"]

    renamed = await api.admin.patch(f"/v1/accounts/{account['id']}", json={"name": "News"})
    assert renamed.json()["id"] == account["id"] and renamed.json()["name"] == "News"
    # Messages keep referring to the id.
    (view,) = await api.queue.describe([sent.json()["id"]])
    assert view.account == account["id"]

    dup = await api.admin.post("/v1/accounts", json={"name": "News"})
    assert (dup.status_code, dup.json()["code"], dup.json()["field"]) == (
        409,
        "account_exists",
        "name",
    )
    bad = await api.admin.post("/v1/accounts", json={"name": "x", "author_domains": ["no.example"]})
    assert (bad.status_code, bad.json()["field"]) == (422, "author_domains[0]")
    bad = await api.admin.post("/v1/accounts", json={"name": "x", "extra": 1})
    assert bad.status_code == 422
    page = (await api.admin.get("/v1/accounts")).json()
    assert {a["id"] for a in page["data"]} == {"acme", "creator", account["id"]}


async def test_seeded_accounts_are_there_and_trusted(api: Api) -> None:
    acme = (await api.admin.get("/v1/accounts/acme")).json()
    assert (acme["name"], acme["config_seeded"], acme["trusted"]) == ("acme", True, True)


async def test_rate_limit_answers_429_with_headers(tmp_path: Path, backend: str) -> None:
    async for api in start_api(tmp_path, backend, extra="rate_limit = 1\nrate_burst = 3"):
        client = await api.keyed("acme", "full")
        replies = [await client.get("/v1/accounts/acme") for _ in range(4)]
        assert [r.status_code for r in replies[:3]] == [200, 200, 200]
        assert [r.headers["RateLimit-Remaining"] for r in replies[:3]] == ["2", "1", "0"]
        last = replies[3]
        assert last.status_code == 429 and last.json()["code"] == "rate_limited"
        assert int(last.headers["Retry-After"]) >= 1
        assert last.headers["RateLimit-Remaining"] == "0"
        # Another key of the same account has its own allowance.
        other = await api.keyed("acme", "full")
        assert (await other.get("/v1/accounts/acme")).status_code == 200


async def test_health_readiness_metrics_openapi(api: Api) -> None:
    anon = api.client()
    assert (await anon.get("/healthz")).json() == {"status": "ok", "checks": {}}
    ready = await anon.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"store": "ok"}
    await (await api.keyed("acme")).get("/v1/accounts/acme")
    text = (await anon.get("/metrics")).text
    assert (
        'maildispatch_api_responses_total{method="GET",route="/v1/accounts/{account_id}",status="200"}'
        in text
    )
    assert "maildispatch_api_request_seconds_bucket" in text
    doc = (await anon.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1") and "/v1/messages" in doc["paths"]


async def test_readyz_is_503_when_the_store_does_not_answer(api: Api) -> None:
    async def down() -> None:
        raise ConnectionError("refused")

    api.live.services.probes["store"] = down
    ready = await api.client().get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["store"].startswith("error")
