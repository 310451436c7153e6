"""Scalar value parsers shared by the sections: durations, domains, HOST:PORT, date-times."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import idna

from dispatcher.config.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


@dataclass(frozen=True, slots=True)
class Route:
    """One next hop: a host (name or IP literal) and a TCP port."""

    host: str
    port: int


def parse_duration(value: object, key_path: str) -> float:
    """`30`, `"30s"`, `"5m"`, `"7d"` -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(field=key_path, reason="expected a duration such as 30s, 5m or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(field=key_path, reason="must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ConfigError(
        field=key_path, reason=f"expected a duration such as 30s, 5m or 7d, got {value!r}"
    )


def check_domain(value: object, key_path: str) -> str:
    """A lower-cased DNS name (IDNA-encoded when given in Unicode)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(field=key_path, reason="expected a domain name")
    try:
        # UTS 46 / IDNA 2008 (as recipient domains): the stdlib codec is IDNA 2003.
        name = idna.encode(value.strip().lower(), uts46=True).decode("ascii")
    except (UnicodeError, idna.IDNAError):
        raise ConfigError(field=key_path, reason=f"not a valid domain name: {value!r}") from None
    if not _DOMAIN.match(name):
        raise ConfigError(field=key_path, reason=f"not a valid domain name: {value!r}")
    return name


def parse_route(value: object, key_path: str) -> Route:
    """`HOST:PORT` (port 25 when absent; IPv6 literals in brackets) -> Route."""
    if not isinstance(value, str) or not value:
        raise ConfigError(field=key_path, reason="expected HOST:PORT")
    host, sep, port_s = value.rpartition(":")
    if not sep:
        host, port_s = value, "25"
    host = host.strip("[]")
    if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ConfigError(field=key_path, reason=f"expected HOST:PORT, got {value!r}")
    return Route(host=host, port=int(port_s))


def parse_timestamp(value: object, key_path: str) -> float:
    """A TOML date-time, date, ISO 8601 string or epoch seconds -> epoch seconds (UTC if naive)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_timestamp(
                dt.datetime.fromisoformat(value.replace("Z", "+00:00")), key_path
            )
        except ValueError:
            pass
    raise ConfigError(
        field=key_path, reason=f"expected a date-time such as 2026-01-01T00:00:00Z, got {value!r}"
    )
