"""Suite-wide fixtures. MAILDISPATCH_LOOP=uvloop runs every async test on uvloop."""

from __future__ import annotations

import asyncio
import os

import pytest


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    if os.environ.get("MAILDISPATCH_LOOP") == "uvloop":
        import uvloop

        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()
