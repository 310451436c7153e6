"""A message's deadline: it ends when the final dot is written, never inside the dot's wait.

A tarpit that answers each command just under the command timeout would otherwise hold a
session for hours. `BeforeDot` cancels the sending task at its deadline, but only while the
dot is not written: both clients write the dot and set `dot_written` in one synchronous step,
so a cancellation delivered by the deadline always lands before the dot (a safe retry), and
once the dot is out only the patient `data_timeout` applies (a deadline there would
manufacture ambiguity).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType


class BeforeDot:
    """`async with BeforeDot(when, dot_written): ...` - `expired` tells whether it fired.

    `when` is on the loop's clock. A cancellation of the task from elsewhere (shutdown)
    passes through untouched.
    """

    __slots__ = ("_dot_written", "_handle", "_task", "_when", "expired")

    def __init__(self, when: float, dot_written: Callable[[], bool]) -> None:
        self._when = when
        self._dot_written = dot_written
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.expired = False

    async def __aenter__(self) -> BeforeDot:
        self._task = asyncio.current_task()
        self._handle = asyncio.get_running_loop().call_at(self._when, self._fire)
        return self

    def _fire(self) -> None:
        if self._task is not None and not self._dot_written():
            self.expired = True
            self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._handle is not None:
            self._handle.cancel()
        if self.expired and self._task is not None:
            # Ours alone: swallow it. Another cancellation too: let it through.
            remaining = self._task.uncancel()
            return exc_type is asyncio.CancelledError and remaining == 0
        return False
