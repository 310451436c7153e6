"""The JSON shape of an event as consumers see it (stream entries and webhook batches)."""

from __future__ import annotations

import json
from typing import Any

from queues.protocol import Event


def event_object(e: Event) -> dict[str, Any]:
    """`{"id", "type", "seq", "at", "account", "message_id", "campaign", "metadata", "data"}`;
    `data` carries the reply (code, text) and where the attempt went."""
    metadata: Any = None
    if e.metadata:
        try:
            metadata = json.loads(e.metadata)
        except ValueError:
            metadata = None
    return {
        "id": e.id,
        "type": e.kind,
        "seq": e.seq,
        "at": e.at,
        "account": e.account,
        "message_id": e.message_id,
        "campaign": e.campaign,
        "metadata": metadata,
        "data": dict(e.data),
    }
