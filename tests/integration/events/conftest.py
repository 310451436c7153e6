"""The store fixtures of the queue suite (every backend), and a private Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.queues.conftest import make_queue, queue
from tests.support.redis_server import RedisServer

__all__ = ["make_queue", "queue", "redis_server"]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own (it may restart it empty)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()
