"""Suite-wide fixtures. MAILDISPATCH_LOOP=uvloop runs every async test on uvloop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any


def pytest_asyncio_loop_factories(
    config: Any, item: Any
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if os.environ.get("MAILDISPATCH_LOOP") == "uvloop":
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


# CI runs property tests derandomized (the same examples every run), so a run is repeatable;
# locally they explore new examples each time and keep failures in .hypothesis/.
if os.environ.get("CI"):
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None)
    settings.load_profile("ci")
