"""Config files for the accounts CLI and the HTTP API tests, on either backend."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

AUTHOR = "acme-news.example"
SECOND_AUTHOR = "creator-letters.example"
PLATFORM = "send1.platform.example"
DEST = "dest.example"


def pg_dsn(migrated: bool = False) -> str:
    """A fresh PostgreSQL database (the test skips when the server is down; fails under CI)."""
    from tests.support.postgres import create_test_database, unreachable

    try:
        return asyncio.run(create_test_database(migrated=migrated))
    except OSError as e:
        unreachable(e)


def write_config(tmp: Path, *, backend: str = "sqlite", dsn: str = "", extra: str = "") -> Path:
    """A config with two config accounts (acme, creator), keys made on first use."""
    queue = (
        f'backend = "postgres"\ndsn = "{dsn}"'
        if backend == "postgres"
        else f'path = "{tmp / "state" / "queue.db"}"'
    )
    keys = tmp / "keys"
    text = f"""
state_dir = "{tmp / "state"}"
[queue]
{queue}
[dkim]
create_missing = true
[[dkim.keys]]
domain = "{AUTHOR}"
selector = "s1"
file = "{keys / f"{AUTHOR}.s1.pem"}"
[[dkim.keys]]
domain = "{SECOND_AUTHOR}"
selector = "s1"
file = "{keys / f"{SECOND_AUTHOR}.s1.pem"}"
[[dkim.keys]]
domain = "{PLATFORM}"
selector = "s1"
file = "{keys / f"{PLATFORM}.s1.pem"}"
[[accounts]]
name = "acme"
author_domains = ["{AUTHOR}"]
[[accounts]]
name = "creator"
author_domains = ["{SECOND_AUTHOR}"]
[[pools]]
name = "main"
[[pools.ips]]
address = "127.0.0.2"
ehlo = "mta1.platform.example"
[[pools.domains]]
domain = "{PLATFORM}"
{extra}
"""
    tomllib.loads(text)
    path = tmp / "config.toml"
    path.write_text(text)
    return path


ADMIN_KEY = "test-admin-key-0123456789abcdef"


class LiveApi:
    """The real app on uvicorn, on 127.0.0.1 and a free port, in the test's event loop."""

    def __init__(self, config: Any, queue: Any = None) -> None:
        import uvicorn

        from dispatcher.api.app import create_app

        self.app = create_app(config, queue=queue)
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=0,
                lifespan="on",
                access_log=False,
                log_level="warning",
                http="httptools",
            )
        )
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def __aenter__(self) -> LiveApi:
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                break
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        else:
            raise TimeoutError("the API server did not start")
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    @property
    def services(self) -> Any:
        return self.app.state.services
