"""`[log]`: how log lines are written (`key=value` or JSON) and from which level."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dispatcher.config.table import Section, Table


class LogFormat(enum.StrEnum):
    KV = "kv"  # one line per event: `ts=... level=info event=... key=value`
    JSON = "json"  # one JSON object per line


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: LogFormat = LogFormat.KV
    level: LogLevel = LogLevel.INFO


SECTION = Section("log", ("format", "level"))


def parse_log(t: Table) -> LogConfig:
    base = LogConfig()
    log = LogConfig(format=t.choice("format", base.format), level=t.choice("level", base.level))
    t.done()
    return log
