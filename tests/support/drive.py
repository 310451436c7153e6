"""Run a coroutine that must not suspend (the in-process counters never do) without a loop."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """The coroutine's result; AssertionError if it tried to wait for anything."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the coroutine suspended: it waited on I/O")
