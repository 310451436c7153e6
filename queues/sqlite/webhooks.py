"""Webhook endpoints on SQLite (see queues/webhooks.py)."""

from __future__ import annotations

import sqlite3

from queues.webhooks import WebhookRecord

_COLUMNS = "id, account, url, doc, state, created_at, updated_at"


def save(conn: sqlite3.Connection, record: WebhookRecord, now: float) -> None:
    """Insert, or replace url and doc (never the sender's state)."""
    conn.execute(
        "INSERT INTO webhooks (id, account, url, doc, created_at, updated_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (id) DO UPDATE SET "
        "url = excluded.url, doc = excluded.doc, updated_at = excluded.updated_at",
        (record.id, record.account, record.url, record.doc, now),
    )


def save_state(conn: sqlite3.Connection, webhook_id: str, state: str) -> None:
    conn.execute("UPDATE webhooks SET state = ?2 WHERE id = ?1", (webhook_id, state))


def listing(
    conn: sqlite3.Connection, account: str | None, webhook_id: str | None
) -> list[WebhookRecord]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM webhooks WHERE (?1 IS NULL OR account = ?1) "
        "AND (?2 IS NULL OR id = ?2) ORDER BY id",
        (account, webhook_id),
    ).fetchall()
    return [WebhookRecord(*r) for r in rows]
