"""Live reload: on SIGHUP (`trigger`) and when config.toml changes on disk (watchfiles,
debounced), the file is read and validated first; an invalid edit is logged with its errors
and the running config stays. A valid one is handed to `apply` (the runtime and its engine),
which changes what a running engine can change and says what it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import watchfiles

from dispatcher.config import Config, ConfigError, load_config

log = logging.getLogger(__name__)


class ConfigWatcher:
    """Watches one config file; `run` until cancelled (a watched side task)."""

    def __init__(
        self,
        path: Path,
        apply: Callable[[Config], object],
        *,
        debounce: float = 0.5,
        on_error: Callable[[ConfigError], None] | None = None,
    ) -> None:
        self.path = path.resolve()
        self._apply = apply
        self._debounce = debounce
        self._on_error = on_error
        self._kick = asyncio.Event()
        self.reloads = 0
        self.rejected = 0
        self.last_error: ConfigError | None = None

    def trigger(self) -> None:
        """Reload now (SIGHUP)."""
        self._kick.set()

    async def run(self) -> None:
        watcher = asyncio.create_task(self._watch_file(), name="config-file-watch")
        try:
            while True:
                await self._kick.wait()
                self._kick.clear()
                self.reload()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher

    async def _watch_file(self) -> None:
        # The folder, not the file: editors replace files by renaming a new one over them.
        ms = int(self._debounce * 1000)
        name = self.path.name
        async for changes in watchfiles.awatch(
            self.path.parent,
            debounce=ms,
            step=min(ms, 50),
            watch_filter=lambda _change, p: Path(p).name == name,
            recursive=False,
        ):
            if changes:
                self._kick.set()

    def reload(self) -> bool:
        """Read, validate, apply; False (logged, nothing changed) for an invalid file."""
        try:
            config = load_config(self.path)
        except ConfigError as e:
            self.rejected += 1
            self.last_error = e
            log.error("config reload rejected, the running config stays: %s", e)
            if self._on_error is not None:
                self._on_error(e)
            return False
        self.reloads += 1
        self._apply(config)
        return True
