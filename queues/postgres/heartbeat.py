"""Lease renewal on a connection of its own.

A heartbeat must never queue behind a big claim or outcome batch in the pool: it gets a
dedicated connection, opened on first use and reopened after a failure.
"""

from __future__ import annotations

import asyncpg

from queues.postgres.connection import translated_errors
from queues.postgres.sql import QUERIES


class HeartbeatConnection:
    """Renews leases; `renew` returns the new expiry or None when the lease is gone."""

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._conn: asyncpg.Connection | None = None
        self.round_trips = 0

    async def renew(
        self, worker_id: str, epoch: int, expires_at: float, now: float
    ) -> float | None:
        """Extend the lease to `expires_at` unless it expired or was taken over."""
        async with translated_errors():
            try:
                conn = await self._connection()
                self.round_trips += 1
                renewed: float | None = await conn.fetchval(
                    QUERIES["heartbeat"], worker_id, epoch, expires_at, now
                )
            except BaseException:
                # Unknown state (lost, timed out, cancelled mid-query): start afresh next time.
                self._drop()
                raise
        return renewed

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close(timeout=self._connect_timeout)
            except Exception:
                conn.terminate()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=self._connect_timeout,
                server_settings={"application_name": "maildispatch-heartbeat"},
            )
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
