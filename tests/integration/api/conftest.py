"""The API over HTTP on both backends: a live uvicorn per test, accounts made as an
operator would (config seeding, then keys through the API with the admin key)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher.config import Config, load_config
from dispatcher.engine.runtime import open_store, seed_accounts
from queues.protocol import Queue
from tests.support.api import ADMIN_KEY, LiveApi, write_config

# Webhook endpoints on loopback (the tests' receivers) are allowed; the KEK is a test's.
WEBHOOKS = (
    '[webhooks]\nencryption_keys = ["test-webhook-kek-0123456789abcdef01234"]\n'
    "allow_private = true\n"
)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass
class Api:
    """A live API, an admin client, and helpers to make keyed clients."""

    live: LiveApi
    config: Config
    admin: httpx.AsyncClient
    clients: list[httpx.AsyncClient]

    @property
    def queue(self) -> Queue:
        queue: Queue = self.live.services.queue
        return queue

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.AsyncClient(base_url=self.live.url, headers=headers, timeout=30)
        self.clients.append(c)
        return c

    async def key(self, account: str, scope: str = "full") -> str:
        r = await self.admin.post(f"/v1/accounts/{account}/keys", json={"scope": scope})
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token

    async def keyed(self, account: str, scope: str = "full") -> httpx.AsyncClient:
        return self.client(await self.key(account, scope))


async def _config(tmp: Path, backend: str, extra: str) -> Config:
    api = f'[api]\nadmin_key = "{ADMIN_KEY}"\n{extra}\n{WEBHOOKS}'
    if backend == "postgres":
        from tests.support.postgres import create_test_database

        try:
            dsn = await create_test_database()
        except OSError as e:
            pytest.skip(f"PostgreSQL unreachable: {e}")
        return load_config(write_config(tmp, backend="postgres", dsn=dsn, extra=api))
    return load_config(write_config(tmp, extra=api))


async def start_api(
    tmp: Path, backend: str, extra: str = "", wrap: Any = None
) -> AsyncIterator[Api]:
    config = await _config(tmp, backend, extra)
    queue = await open_store(config)
    await seed_accounts(queue, config)  # what `db migrate` does on PostgreSQL
    served = wrap(queue) if wrap else queue
    try:
        async with LiveApi(config, queue=served) as live:
            api = Api(live, config, httpx.AsyncClient(base_url=live.url), [])
            api.admin.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
            try:
                yield api
            finally:
                for c in [api.admin, *api.clients]:
                    await c.aclose()
    finally:
        await queue.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def api(tmp_path: Path, backend: str) -> AsyncIterator[Api]:
    async for a in start_api(tmp_path, backend):
        yield a
