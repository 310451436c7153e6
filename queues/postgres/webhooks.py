"""Webhook endpoints on PostgreSQL (see queues/webhooks.py): one statement per call."""

from __future__ import annotations

from queues.postgres.connection import Database
from queues.webhooks import WebhookRecord

_COLUMNS = "id, account, url, doc, state, created_at, updated_at"


class Webhooks:
    """The md_webhook table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(self, record: WebhookRecord, now: float) -> None:
        """Insert, or replace url and doc (never the sender's state)."""
        await self._db.fetch(
            "INSERT INTO md_webhook (id, account, url, doc, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO UPDATE SET "
            "url = excluded.url, doc = excluded.doc, updated_at = excluded.updated_at",
            record.id,
            record.account,
            record.url,
            record.doc,
            now,
        )

    async def save_state(self, webhook_id: str, state: str) -> None:
        await self._db.fetch("UPDATE md_webhook SET state = $2 WHERE id = $1", webhook_id, state)

    async def listing(self, account: str | None, webhook_id: str | None) -> list[WebhookRecord]:
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM md_webhook WHERE ($1::text IS NULL OR account = $1) "
            "AND ($2::text IS NULL OR id = $2) ORDER BY id",
            account,
            webhook_id,
        )
        return [WebhookRecord(*r.values()) for r in rows]
