"""Schema migrations: `migrate(dsn)` applies the `.sql` files not yet applied.

Idempotent (a second run applies nothing), serialized across processes by an advisory
lock, each step in its own transaction together with the row that records it, and it
refuses a database whose schema is newer than this code knows.
"""

from __future__ import annotations

import asyncpg

from queues.errors import SchemaMismatch
from queues.postgres.connection import translated_errors
from queues.postgres.sql import KNOWN_VERSIONS, LATEST_VERSION, MIGRATIONS

# Arbitrary, fixed: pg_advisory_lock key shared by every migrating process.
_LOCK_KEY = 0x6D64_6D69_6772  # "mdmigr"

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS md_schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def schema_version(conn: asyncpg.Connection) -> int:
    """The highest applied migration, 0 for a database never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('md_schema_version') IS NOT NULL")
    if not exists:
        return 0
    version: int = await conn.fetchval("SELECT coalesce(max(version), 0) FROM md_schema_version")
    return version


async def applied_versions(conn: asyncpg.Connection) -> set[int]:
    """Every migration applied so far (empty for a database never migrated)."""
    exists = await conn.fetchval("SELECT to_regclass('md_schema_version') IS NOT NULL")
    if not exists:
        return set()
    rows = await conn.fetch("SELECT version FROM md_schema_version")
    return {int(r["version"]) for r in rows}


def check_applied(applied: set[int]) -> None:
    """Raise SchemaMismatch unless exactly the migrations this code knows are applied."""
    unknown = applied - KNOWN_VERSIONS
    if unknown:
        check_version(max(unknown))
    if KNOWN_VERSIONS - applied:
        check_version(min(KNOWN_VERSIONS - applied) - 1)


def check_version(found: int) -> None:
    """Raise SchemaMismatch unless `found` is exactly the version this code knows."""
    if found > LATEST_VERSION:
        raise SchemaMismatch(
            f"the database schema is version {found}, newer than this maildispatch knows "
            f"({LATEST_VERSION}): upgrade maildispatch",
            code="schema_too_new",
            found=found,
            known=LATEST_VERSION,
        )
    if found < LATEST_VERSION:
        raise SchemaMismatch(
            f"the database schema is version {found}, this maildispatch needs "
            f"{LATEST_VERSION}: run `maildispatch db migrate --config FILE`",
            code="schema_not_migrated",
            found=found,
            known=LATEST_VERSION,
        )


async def migrate(dsn: str, *, connect_timeout: float = 10.0) -> int:
    """Bring the schema at `dsn` to the latest version; returns that version.

    Raises SchemaMismatch("schema_too_new") when the database is ahead of this code, and
    QueueUnavailable when the server cannot be reached.
    """
    async with translated_errors():
        conn = await asyncpg.connect(dsn, timeout=connect_timeout)
    try:
        async with translated_errors():
            # Session-level lock, released when the connection closes.
            await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
            await conn.execute(_CREATE_VERSION_TABLE)
            applied = await applied_versions(conn)
            if applied - KNOWN_VERSIONS:
                check_version(max(applied - KNOWN_VERSIONS))
            for step in MIGRATIONS:
                if step.version in applied:
                    continue
                async with conn.transaction():
                    await conn.execute(step.sql)
                    await conn.execute(
                        "INSERT INTO md_schema_version (version, name) VALUES ($1, $2)",
                        step.version,
                        step.name,
                    )
            return LATEST_VERSION
    finally:
        await conn.close()
