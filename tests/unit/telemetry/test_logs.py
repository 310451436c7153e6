"""Log lines: one line per event, `key=value` or JSON, remote text escaped, no traceback for
an expected network failure."""

from __future__ import annotations

import io
import json
import logging
import re
import ssl
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.config import LogConfig, LogFormat, LogLevel
from dispatcher.telemetry.logs import JsonFormatter, KeyValueFormatter, configure_logging, escape

# A kv line: key=bare or key="quoted with \" and \\ escapes", separated by single spaces.
_PAIR = re.compile(r'([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|[^\s"=\\]+)')


def parse_kv(line: str) -> dict[str, str]:
    pairs = _PAIR.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, line
    out = {}
    for k, v in pairs:
        if v.startswith('"'):
            v = re.sub(
                r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m[1], m[1]), v[1:-1]
            )
        out[k] = v
    return out


def record(
    msg: str, *args: object, exc: BaseException | None = None, **fields: object
) -> logging.LogRecord:
    rec = logging.LogRecord("dispatcher.test", logging.WARNING, __file__, 1, msg, args, None)
    if exc is not None:
        rec.exc_info = (type(exc), exc, exc.__traceback__)
    if fields:
        rec.fields = fields
    return rec


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as e:
        return e


def test_kv_line_has_the_fields_in_order() -> None:
    line = KeyValueFormatter().format(record("queue unavailable (%s)", "refused", ip="127.0.0.2"))
    fields = parse_kv(line)
    assert list(fields) == ["ts", "level", "logger", "msg", "ip"]
    assert fields["level"] == "warning" and fields["logger"] == "dispatcher.test"
    assert fields["msg"] == "queue unavailable (refused)" and fields["ip"] == "127.0.0.2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["ts"])


def test_remote_text_cannot_forge_a_line_or_a_key() -> None:
    hostile = '550 no\r\nts=0 level=error msg="forged" \x1b[31mred\u2028 x=1'
    line = KeyValueFormatter().format(record("reply: %s", hostile))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    fields = parse_kv(line)
    assert set(fields) == {"ts", "level", "logger", "msg"}
    assert fields["level"] == "warning"
    assert "forged" in fields["msg"]


@given(st.text())
def test_any_text_stays_one_line_and_round_trips_the_printable(text: str) -> None:
    value = escape(text)
    assert all(c.isprintable() for c in value)
    fields = parse_kv(f"k={value}")
    if all(c.isprintable() or c in "\n\r\t" for c in text):
        assert fields["k"] == text


def test_json_line_is_one_object() -> None:
    line = JsonFormatter().format(record("reply: %s", "5.7.1 \r\nblocked", pool="warm"))
    assert "\n" not in line and "\r" not in line
    obj = json.loads(line)
    assert obj["msg"] == "reply: 5.7.1 \r\nblocked" and obj["pool"] == "warm"
    assert obj["level"] == "warning"


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError("reset by peer"),
        TimeoutError("timed out"),
        ssl.SSLError("bad handshake"),
    ],
)
def test_an_expected_network_failure_has_no_traceback(exc: BaseException) -> None:
    fields = parse_kv(KeyValueFormatter().format(record("send failed", exc=raised(exc))))
    assert fields["error"].startswith(type(exc).__name__ + ": ")
    assert "traceback" not in fields


def test_a_bug_keeps_its_traceback_on_the_same_line() -> None:
    line = KeyValueFormatter().format(record("crashed", exc=raised(KeyError("x"))))
    assert "\n" not in line
    fields = parse_kv(line)
    assert "Traceback (most recent call last)" in fields["traceback"]
    assert fields["traceback"].rstrip().endswith("KeyError: 'x'")
    obj = json.loads(JsonFormatter().format(record("crashed", exc=raised(KeyError("x")))))
    assert "KeyError" in obj["traceback"]


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_replaces_its_handler_and_sets_the_level(root_logging: None) -> None:
    out = io.StringIO()
    configure_logging(LogConfig(format=LogFormat.KV), stream=out)
    configure_logging(LogConfig(format=LogFormat.JSON, level=LogLevel.WARNING), stream=out)
    mine = [h for h in logging.getLogger().handlers if h.get_name() == "maildispatch"]
    assert len(mine) == 1
    log = logging.getLogger("dispatcher.test")
    log.info("not shown")
    log.warning("shown %d", 1)
    lines = out.getvalue().splitlines()
    assert [json.loads(x)["msg"] for x in lines] == ["shown 1"]
