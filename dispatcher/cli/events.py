"""`maildispatch events tail`: follow the event outbox (outcomes and deliverability events).

Under PostgreSQL a row may commit after one with a larger seq (concurrent writers), so the
follower re-reads a window of recent seqs and prints each event once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import deque
from collections.abc import Callable

from queues.protocol import Event, Queue

LOOKBACK = 1000  # seqs re-read behind the newest seen
PAGE = 500


def event_dict(e: Event) -> dict[str, object]:
    """The JSON form of an event (one line of `--json`)."""
    return {
        "seq": e.seq,
        "at": e.at,
        "kind": e.kind,
        "message_id": e.message_id,
        "account": e.account,
        "data": dict(e.data),
    }


def event_line(e: Event) -> str:
    """The text form: seq, UTC time, kind, message, account, then the data as key=value."""
    when = dt.datetime.fromtimestamp(e.at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    who = " ".join(x for x in (e.message_id, e.account) if x)
    data = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in e.data.items())
    return " ".join(x for x in (f"{e.seq:>8}", when, e.kind, who, data) if x)


async def tail(
    queue: Queue,
    out: Callable[[Event], None],
    *,
    lines: int = 20,
    follow: bool = True,
    poll: float = 0.5,
    stop: asyncio.Event | None = None,
) -> int:
    """Print the last `lines` events, then (with `follow`) new ones until `stop` is set.
    Returns how many were printed."""
    stop = stop or asyncio.Event()
    start = max(0, await queue.last_event_seq() - lines)
    seen: set[int] = set()
    order: deque[int] = deque()
    printed = 0
    cursor = start
    while True:
        after = max(start, cursor - LOOKBACK)
        while True:
            page = await queue.read_events(after, PAGE)
            for e in page:
                if e.seq in seen:
                    continue
                seen.add(e.seq)
                order.append(e.seq)
                out(e)
                printed += 1
                cursor = max(cursor, e.seq)
            while len(order) > 2 * LOOKBACK:
                seen.discard(order.popleft())
            if len(page) < PAGE:
                break
            after = page[-1].seq
        if not follow or stop.is_set():
            return printed
        try:
            await asyncio.wait_for(stop.wait(), timeout=poll)
        except TimeoutError:
            continue
        return printed
