"""Reports to an account: message views and listings (connection thread)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from queues.protocol import MessageState, MessageView
from queues.sqlite.sql import R

_WAITING = (MessageState.QUEUED, MessageState.DEFERRED)
# Above every id (ids are hex digits or short ASCII names): "no cursor".
_TOP = "\U0010ffff"


def _view(row: tuple[object, ...]) -> MessageView:
    state = MessageState(str(row[3]))
    return MessageView(
        id=row[0],  # type: ignore[arg-type]
        account=row[1],  # type: ignore[arg-type]
        idempotency_key=row[2],  # type: ignore[arg-type]
        state=state,
        attempts=row[4],  # type: ignore[arg-type]
        rcpt=row[5],  # type: ignore[arg-type]
        stream=row[6],  # type: ignore[arg-type]
        campaign=row[7],  # type: ignore[arg-type]
        metadata=row[8],  # type: ignore[arg-type]
        enqueued_at=row[9],  # type: ignore[arg-type]
        updated_at=row[10],  # type: ignore[arg-type]
        due_at=row[11] if state in _WAITING else None,  # type: ignore[arg-type]
        expires_at=row[12],  # type: ignore[arg-type]
        last_reply_code=row[13],  # type: ignore[arg-type]
        last_reply_text=row[14],  # type: ignore[arg-type]
        source_ip=row[15],  # type: ignore[arg-type]
        platform_domain=row[16],  # type: ignore[arg-type]
        mx_host=row[17],  # type: ignore[arg-type]
    )


def describe(conn: sqlite3.Connection, ids: Sequence[str]) -> list[MessageView]:
    """Views of the ids that exist, in the order asked."""
    if not ids:
        return []
    found = {v.id: v for v in map(_view, conn.execute(R.describe, (json.dumps(list(ids)),)))}
    return [found[i] for i in dict.fromkeys(ids) if i in found]


def listing(
    conn: sqlite3.Connection,
    account: str,
    campaign: str | None,
    state: MessageState | None,
    before: str | None,
    limit: int,
) -> list[MessageView]:
    """One page of the account's messages, newest first."""
    args: tuple[object, ...] = (account, None if state is None else state.value, before or _TOP)
    if campaign is None:
        rows = conn.execute(R.list_all, (*args, limit))
    else:
        rows = conn.execute(R.list_campaign, (*args, limit, campaign))
    return [_view(r) for r in rows]
