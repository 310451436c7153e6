"""Ready queues: the messages routed and signed, waiting for a session that may take them.

With admission, one `ReadyQueue` per (pool, provider, MX site) is shared by the lanes of every
source IP that opens sessions to that site: a free session asks admission whether its IP may
carry one more message to the provider, and only then takes the next one. Within a queue,
transactional mail goes before broadcast mail (stream priority), each in claim order.
A lane without admission (its own queue) behaves as before: first in, first out by stream.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dispatcher.engine.lane import Work

_FIRST = "transactional"  # the stream that goes first


class ReadyQueue:
    """Messages waiting for a session: two FIFO deques, transactional first.

    Deque-like (`append`, `appendleft`, `popleft`, `[0]`, `len`, iteration) so a lane uses
    its own or a shared one alike; `has_work` is set whenever a message is added.
    """

    __slots__ = (
        "_first",
        "_rest",
        "has_work",
        "key",
        "on_back",
        "on_take",
        "pool",
        "route_key",
        "sessions",
        "site",
        "waiting_since_empty",
    )

    def __init__(self, pool: str | None = None, route_key: str = "", site: str = "") -> None:
        self._first: deque[Work] = deque()
        self._rest: deque[Work] = deque()
        self.has_work = asyncio.Event()
        self.pool = pool
        self.route_key = route_key
        self.site = site
        self.key = (pool, route_key, site)
        self.sessions = 0  # sessions taking from this queue (shared mode)
        self.waiting_since_empty = 0.0
        # Told when a session takes a message, and when one is put back (its owner counts).
        self.on_take: Callable[[Work], None] | None = None
        self.on_back: Callable[[Work], None] | None = None

    def _side(self, work: Work) -> deque[Work]:
        return self._first if work.message.stream == _FIRST else self._rest

    def append(self, work: Work) -> None:
        work.waiting_since = time.monotonic()
        self._side(work).append(work)
        self.has_work.set()

    def appendleft(self, work: Work) -> None:
        """Back at the front of its stream (a message a session could not start)."""
        self._side(work).appendleft(work)
        self.has_work.set()
        if self.on_back is not None:
            self.on_back(work)

    def popleft(self) -> Work:
        work = self._first.popleft() if self._first else self._rest.popleft()
        if self.on_take is not None:
            self.on_take(work)
        return work

    def __getitem__(self, index: int) -> Work:
        if index != 0:
            raise IndexError("only the head of a ready queue is visible")
        return self._first[0] if self._first else self._rest[0]

    def __len__(self) -> int:
        return len(self._first) + len(self._rest)

    def __bool__(self) -> bool:
        return bool(self._first) or bool(self._rest)

    def __iter__(self) -> Iterator[Work]:
        yield from self._first
        yield from self._rest

    def count(self, stream: str) -> int:
        """Messages of `stream` waiting."""
        if stream == _FIRST:
            return len(self._first)
        return sum(1 for w in self._rest if w.message.stream == stream)

    def clear(self) -> None:
        self._first.clear()
        self._rest.clear()

    def take_all(self) -> list[Work]:
        items = list(self)
        self.clear()
        return items

    def remove_if(self, doomed: Callable[[Work], bool]) -> list[Work]:
        """Take out the messages for which `doomed(work)` holds; the rest keep their order."""
        out: list[Work] = []
        for side in (self._first, self._rest):
            keep = [w for w in side if not doomed(w)]
            if len(keep) != len(side):
                out += [w for w in side if doomed(w)]
                side.clear()
                side.extend(keep)
        return out
