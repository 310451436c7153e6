"""The Lua scripts beside this module, loaded once and called by EVALSHA.

A script missing from Redis (restarted, or SCRIPT FLUSH) is loaded again and the call
retried; every script refuses under a stale epoch, so a retry after a restart is harmless.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: its source and SHA-1 (EVALSHA's name for it)."""

    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str) -> Script:
        source = files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


RATE = Script.load("rate")
SLOTS = Script.load("slots")
PAUSE = Script.load("pause")
REBUILD = Script.load("rebuild")
COUNT = Script.load("count")
SEED = Script.load("seed")
ALL = (RATE, COUNT, SEED, SLOTS, PAUSE, REBUILD)
