"""Helpers of the queue conformance suite: messages, outcomes and a queue factory type."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from queues.protocol import ClaimedMessage, MessageState, NewMessage, OutcomeRecord, Queue

_ids = itertools.count(1)


def message(n: int | None = None, **fields: Any) -> NewMessage:
    """A small valid message; unique id, key and payload unless given."""
    n = next(_ids) if n is None else n
    values: dict[str, Any] = {
        "id": f"msg-{n}",
        "account": "acme",
        "idempotency_key": f"key-{n}",
        "payload_hash": hashlib.sha256(f"payload-{n}".encode()).hexdigest(),
        "author_domain": "acme-news.example",
        "rcpt": f"user{n}@gmail.example",
        "rcpt_domain": "gmail.example",
        "verp_token": f"verp{n}",
        "message_id": f"<{n}@acme-news.example>",
        "body": f"From: news@acme-news.example\r\nSubject: {n}\r\n\r\nhello {n}\r\n".encode(),
    }
    values.update(fields)
    return NewMessage(**values)


def messages(count: int, **fields: Any) -> list[NewMessage]:
    """`count` distinct messages sharing `fields`."""
    return [message(**fields) for _ in range(count)]


def delivered(m: ClaimedMessage | str, **fields: Any) -> OutcomeRecord:
    """A 250 outcome for `m`."""
    values: dict[str, Any] = {
        "state": MessageState.DELIVERED,
        "reply_code": 250,
        "reply_text": "2.0.0 OK",
        "source_ip": "127.0.0.2",
        "platform_domain": "mta1.example",
        "mx_host": "mx.gmail.example",
    }
    values.update(fields)
    return OutcomeRecord(id=m if isinstance(m, str) else m.id, **values)


def ids(items: list[ClaimedMessage] | list[NewMessage]) -> set[str]:
    """The ids of claimed or new messages."""
    return {m.id for m in items}


class MakeQueue(Protocol):
    """The `make_queue` fixture: opened queues on one shared store."""

    def __call__(self, **options: Any) -> Awaitable[Queue]: ...

    async def crash(self, queue: Queue) -> None:
        """Stop using `queue` as a dead process would: its connections and locks go."""


QueueBuilder = Callable[..., Queue]
