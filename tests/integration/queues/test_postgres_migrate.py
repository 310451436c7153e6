"""Migrations on a real PostgreSQL: idempotent, concurrent-safe, refusing newer schemas."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from queues.errors import SchemaMismatch
from queues.postgres import PostgresQueue, migrate
from queues.postgres.sql import LATEST_VERSION, MIGRATIONS
from tests.support.postgres import create_test_database

pytestmark = pytest.mark.postgres


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def _versions(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM md_schema_version ORDER BY version")
        return [r["version"] for r in rows]
    finally:
        await conn.close()


async def test_migrate_creates_schema_and_records_every_version() -> None:
    dsn = await create_test_database(migrated=False)
    assert "md_message" not in await _tables(dsn)

    assert await migrate(dsn) == LATEST_VERSION

    assert {"md_message", "md_history", "md_content", "md_idempotency", "md_worker"} <= (
        await _tables(dsn)
    )
    assert await _versions(dsn) == [m.version for m in MIGRATIONS]


async def test_migrate_twice_applies_nothing_the_second_time() -> None:
    dsn = await create_test_database(migrated=False)
    await migrate(dsn)
    before = await _versions(dsn)

    assert await migrate(dsn) == LATEST_VERSION

    assert await _versions(dsn) == before


async def test_concurrent_migrations_apply_each_step_once() -> None:
    dsn = await create_test_database(migrated=False)

    results = await asyncio.gather(migrate(dsn), migrate(dsn), migrate(dsn))

    assert list(results) == [LATEST_VERSION] * 3
    assert await _versions(dsn) == [m.version for m in MIGRATIONS]


async def test_migrate_refuses_a_newer_schema() -> None:
    dsn = await create_test_database()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO md_schema_version (version, name) VALUES ($1, 'from the future')",
            LATEST_VERSION + 1,
        )
    finally:
        await conn.close()

    with pytest.raises(SchemaMismatch) as err:
        await migrate(dsn)
    assert err.value.code == "schema_too_new"
    assert err.value.found == LATEST_VERSION + 1

    queue = PostgresQueue(dsn)
    with pytest.raises(SchemaMismatch) as err2:
        await queue.open()
    assert err2.value.code == "schema_too_new"


async def test_open_refuses_an_unmigrated_database() -> None:
    dsn = await create_test_database(migrated=False)
    queue = PostgresQueue(dsn)

    with pytest.raises(SchemaMismatch) as err:
        await queue.open()

    assert err.value.code == "schema_not_migrated"
    assert "maildispatch db migrate" in str(err.value)
    assert "md_message" not in await _tables(dsn)  # open() never migrates by itself


async def test_a_migration_not_yet_applied_is_applied_whatever_its_number() -> None:
    """Numbers are handed out per change: one may land after a larger one was applied."""
    dsn = await create_test_database()
    events = next(m for m in MIGRATIONS if m.name.endswith("_events.sql"))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE md_event")
        await conn.execute("DELETE FROM md_schema_version WHERE version = $1", events.version)
    finally:
        await conn.close()
    with pytest.raises(SchemaMismatch) as err:
        await PostgresQueue(dsn).open()
    assert err.value.code == "schema_not_migrated"

    assert await migrate(dsn) == LATEST_VERSION

    assert await _versions(dsn) == [m.version for m in MIGRATIONS]
    assert "md_event" in await _tables(dsn)
    queue = PostgresQueue(dsn)
    await queue.open()
    await queue.close()
