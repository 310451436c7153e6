"""A `Commit` for session tests: the mark resolves as told, and what the session did is kept.

`granted()` and `refused()` resolve at once; `FixedCommit(pending=True)` leaves the mark
pending until the test resolves `commit.future`, so a test can act while the body waits for
its mark (only the final dot held back).
"""

from __future__ import annotations

import asyncio


class FixedCommit:
    def __init__(self, granted: bool = True, *, pending: bool = False) -> None:
        self.granted = granted
        self.pending = pending
        self.future: asyncio.Future[bool] | None = None
        self.requests = 0
        self.cancels = 0
        self.dots = 0
        self.requested = asyncio.Event()  # set when the session asks for the mark

    def request(self) -> asyncio.Future[bool]:
        self.requests += 1
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not self.pending:
            fut.set_result(self.granted)
        self.future = fut
        self.requested.set()
        return fut

    def cancel(self) -> None:
        self.cancels += 1
        if self.future is not None and not self.future.done():
            self.future.cancel()

    def dot_written(self) -> None:
        self.dots += 1


def granted() -> FixedCommit:
    return FixedCommit(True)


def refused() -> FixedCommit:
    return FixedCommit(False)
