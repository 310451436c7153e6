"""Log lines: one line per event, `key=value` (default) or one JSON object, via stdlib logging.

    ts=2026-12-01T21:35:00.123Z level=warning logger=dispatcher.engine.engine msg="queue
    unavailable (...): claims paused, retrying"

(on one line). Fields given as `log.warning("...", extra={"fields": {"ip": ip}})` follow the
message as their own keys. Every value is escaped: control characters, quotes and backslashes
of remote text (SMTP replies, hostile input) can neither break a line nor forge a key.

Network failures (`OSError`: refused, reset, timed out, TLS) are expected: logged with their
one-line description, never with a traceback. A traceback is printed only for what is a bug,
and then escaped onto the same line.

Formatting happens only for records that pass the level, and the engine logs per event
(an outage, a takeover, a rule firing), never per message: this is off the hot path.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from collections.abc import Mapping
from typing import IO, Any

from dispatcher.config import LogConfig, LogFormat

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_TRANSLATE = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_BARE = re.compile(r'[^\s"=\\]+')
_HANDLER_NAME = "maildispatch"


def escape(value: object) -> str:
    """One `key=value` value: bare when it is a plain token, else quoted with escapes."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and _BARE.fullmatch(text):
        return text
    text = text.translate(_TRANSLATE)
    if not text.isprintable():
        # \x1b, \u2028: shown, never acted on by a terminal
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return f'"{text}"'


def _timestamp(created: float) -> str:
    t = time.gmtime(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(created % 1 * 1000):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record as ordered fields: ts, level, logger, msg, extra fields, error."""
    out: dict[str, Any] = {
        "ts": _timestamp(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    extra = getattr(record, "fields", None)
    if isinstance(extra, Mapping):
        for key, value in extra.items():
            name = str(key)
            out[name if name not in out else f"field_{name}"] = value
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        out["error"] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, OSError):  # network failures are expected, not bugs
            out["traceback"] = "".join(traceback.format_exception(exc)).rstrip()
    if record.stack_info:
        out["stack"] = record.stack_info
    return out


class KeyValueFormatter(logging.Formatter):
    """`key=value` pairs on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={escape(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line (`ensure_ascii`: control characters always escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, ensure_ascii=True)


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == LogFormat.JSON else KeyValueFormatter()


def configure_logging(config: LogConfig | None = None, stream: IO[str] | None = None) -> None:
    """Send the root logger's records to `stream` (stderr) in `[log]`'s format and level.

    Idempotent: called again (after the config is read, on reload) it replaces its own
    handler, never adding a second one."""
    config = config or LogConfig()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter(config.format))
    root.addHandler(handler)
    root.setLevel(_LEVELS[config.level])
    # aiosmtpd logs every connection at INFO: far too much for a sink under load.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, _LEVELS[config.level]))
