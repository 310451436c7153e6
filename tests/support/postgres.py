"""Fresh PostgreSQL databases for tests: one migrated template per test run, copied per test.

`await create_test_database()` returns the DSN of a new database with the current schema.
The server comes from MAILDISPATCH_TEST_PG_DSN (default: local trust auth); when it is down,
`unreachable()` skips the test, or fails it under CI. Databases of
this run are dropped at interpreter exit; databases left by runs whose process is gone
(killed mid-run) are dropped when the next run creates its template.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import re
import uuid
from typing import Any, NoReturn, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from queues.postgres.backend import PostgresQueue
from queues.postgres.migrate import migrate
from queues.protocol import NewMessage

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
_PREFIX = "mdtest"
_NAME = re.compile(rf"^{_PREFIX}_(\d+)_[0-9a-f]+_(?:tmpl|\d+)$")
_RUN = f"{_PREFIX}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
_counter = itertools.count(1)
_template: str | None = None
_created: list[str] = []


class OpenPostgres(Protocol):
    """The `open_pg` fixture (tests/integration/queues/conftest.py)."""

    async def __call__(self, dsn: str, **options: Any) -> PostgresQueue: ...


class ConnectPostgres(Protocol):
    """The `pg_connect` fixture (tests/integration/queues/conftest.py)."""

    async def __call__(self, dsn: str) -> asyncpg.Connection: ...


def unreachable(exc: BaseException) -> NoReturn:
    """A PostgreSQL test cannot run: skipped locally, failed under CI (`CI` set), so a CI
    run is never green without its PostgreSQL half."""
    reason = f"PostgreSQL unreachable at {base_dsn()}: {exc!r}"
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set: PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def base_dsn() -> str:
    """The maintenance DSN tests connect to for CREATE/DROP DATABASE."""
    return os.environ.get("MAILDISPATCH_TEST_PG_DSN", DEFAULT_DSN)


def dsn_for(database: str) -> str:
    """`base_dsn()` with its database replaced."""
    parts = urlsplit(base_dsn())
    return urlunsplit(parts._replace(path="/" + database))


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(base_dsn(), timeout=10)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _drop_orphans(conn: asyncpg.Connection) -> None:
    """Drop databases of earlier runs whose process no longer exists."""
    names = await conn.fetch(
        "SELECT datname FROM pg_database WHERE datname LIKE $1", _PREFIX + "_%"
    )
    for r in names:
        m = _NAME.match(r["datname"])
        if m and not _pid_alive(int(m.group(1))):
            await conn.execute(f'DROP DATABASE IF EXISTS "{r["datname"]}" WITH (FORCE)')


async def _ensure_template() -> str:
    global _template
    if _template is None:
        name = f"{_RUN}_tmpl"
        conn = await _admin()
        try:
            await _drop_orphans(conn)
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        _created.append(name)
        await migrate(dsn_for(name))
        _template = name
    return _template


async def create_test_database(*, migrated: bool = True) -> str:
    """A new database (copied from the migrated template, or empty); returns its DSN."""
    name = f"{_RUN}_{next(_counter)}"
    source = await _ensure_template() if migrated else "template0"
    conn = await _admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    finally:
        await conn.close()
    _created.append(name)
    return dsn_for(name)


async def _drop_all() -> None:
    conn = await _admin()
    try:
        # Copies first: the template cannot go while a copy is being made from it.
        for name in reversed(_created):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@atexit.register
def _cleanup() -> None:
    if _created:
        # The server may be down at exit; the next run drops the orphans.
        with contextlib.suppress(Exception):
            asyncio.run(_drop_all())


def make_message(n: int, **fields: Any) -> NewMessage:
    """A small valid message; `n` makes its id, key and recipient unique within a test."""
    values: dict[str, Any] = {
        "id": f"m{n}-{uuid.uuid4().hex[:10]}",
        "account": "acme",
        "idempotency_key": f"key-{n}",
        "payload_hash": f"hash-{n}",
        "author_domain": "acme-news.example",
        "rcpt": f"user{n}@gmail.example",
        "rcpt_domain": "gmail.example",
        "verp_token": f"verp{n}",
        "message_id": f"<{n}.{uuid.uuid4().hex[:8]}@acme-news.example>",
        "body": b"From: news@acme-news.example\r\nSubject: hello\r\n\r\nhello\r\n",
    }
    values.update(fields)
    return NewMessage(**values)
