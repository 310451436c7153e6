"""The connection pool, with every PostgreSQL call counted and outage errors translated.

All SQL of the backend runs through `Database`, so that
- `round_trips` counts statements sent (each one network round trip once prepared),
- a refused, lost or restarting server surfaces as `QueueUnavailable` instead of a driver
  error or a hang (connect and command timeouts bound every call),
- connections broken by a server restart are dropped from the pool at once, so the pool
  reconnects on the next call.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from queues.errors import QueueTimeout, QueueUnavailable

# Connection-level failures. Everything else (a constraint violated, bad SQL) is a bug or a
# data error and is left to propagate as it is.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, unreachable, reset (ConnectionError is a subclass)
    asyncpg.PostgresConnectionError,  # 08xxx: connection lost or rejected
    asyncpg.exceptions.OperatorInterventionError,  # 57xxx: shutdown, restart, starting up
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,  # "connection is closed" on a connection the restart killed
)


@contextlib.asynccontextmanager
async def translated_errors(pool: asyncpg.Pool | None = None) -> AsyncIterator[None]:
    """Turn driver and socket failures into QueueUnavailable / QueueTimeout."""
    try:
        yield
    except QueueUnavailable:
        raise
    except TimeoutError as e:
        raise QueueTimeout(f"PostgreSQL did not answer in time: {e}") from e
    except asyncpg.exceptions.QueryCanceledError as e:
        raise QueueTimeout(f"PostgreSQL cancelled the statement: {e}") from e
    except _UNAVAILABLE as e:
        if pool is not None:
            # A restart breaks every pooled connection at once; replace them all on the next
            # acquire instead of failing once per stale connection.
            await pool.expire_connections()
        code = "connection_lost" if isinstance(e, asyncpg.InterfaceError) else "server_unavailable"
        raise QueueUnavailable(
            f"PostgreSQL is unavailable: {type(e).__name__}: {e}", code=code
        ) from e


class Database:
    """A pool of connections to one database; `round_trips` counts statements sent."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self.round_trips = 0

    @property
    def dsn(self) -> str:
        """The DSN (may hold a password: never log it)."""
        return self._dsn

    async def open(self) -> None:
        """Create the pool (connects `min_size` connections now)."""
        async with translated_errors():
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                # Marks must be durable before they return, whatever the server default.
                server_settings={"synchronous_commit": "on", "application_name": "maildispatch"},
            )

    async def close(self) -> None:
        """Close every connection (waits for calls in progress, bounded by the timeout)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await pool.close()
            except Exception:
                pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise QueueUnavailable("the PostgreSQL queue is not open", code="not_open")
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """One pooled connection for several statements (e.g. a transaction)."""
        pool = self.pool
        async with translated_errors(pool), pool.acquire(timeout=self.connect_timeout) as conn:
            yield Connection(self, conn)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            return await conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(query, *args)


class Connection:
    """A pooled connection whose statements are counted on their `Database`."""

    def __init__(self, db: Database, conn: asyncpg.Connection) -> None:
        self._db = db
        self.raw = conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """BEGIN ... COMMIT (two round trips), rolled back on any exception."""
        self._db.round_trips += 2
        async with self.raw.transaction():
            yield

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        self._db.round_trips += 1
        rows: list[asyncpg.Record] = await self.raw.fetch(query, *args)
        return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        self._db.round_trips += 1
        row: asyncpg.Record | None = await self.raw.fetchrow(query, *args)
        return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        self._db.round_trips += 1
        return await self.raw.fetchval(query, *args)

    async def copy_records(
        self, table: str, columns: Sequence[str], records: Sequence[tuple[Any, ...]]
    ) -> None:
        """Binary COPY of `records` into `table`: two round trips (COPY start, data)."""
        self._db.round_trips += 2
        await self.raw.copy_records_to_table(table, records=records, columns=list(columns))
