"""Waiting for a condition that only polling can see (another process, a database)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(
    check: Callable[[], Awaitable[bool]], within: float = 30.0, every: float = 0.02
) -> None:
    """Poll `check` until it is true; TimeoutError after `within` seconds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 (another process: nothing to await)
            await asyncio.sleep(every)
