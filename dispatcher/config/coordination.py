"""`[coordination]`: where the deliverability counters shared by every process and node live
(Redis), and what a worker does while Redis does not answer."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table


class OnUnavailable(enum.StrEnum):
    WAIT = "wait"  # send nothing that needs a shared count until Redis answers
    LOCAL = "local"  # count in the process at cap / N (N: live workers) meanwhile


@dataclass(frozen=True, slots=True)
class CoordinationConfig:
    # redis://[:password@]host:port/db (rediss:// for TLS); empty: counters in each process.
    redis: str = field(default="", repr=False)  # may hold a password: never logged
    on_unavailable: OnUnavailable = OnUnavailable.WAIT
    key_prefix: str = "maildispatch"
    # A Redis call not answered within this counts as Redis unavailable.
    timeout: float = 1.0
    # After Redis restarted empty: how long the rebuilding worker waits for the others to
    # join with what they had not yet recorded (less when every live worker joined).
    rebuild_wait: float = 3.0
    # A batch of rate tokens is at most this much of the key's rate (at least one token).
    token_window: float = 0.15

    @property
    def shared(self) -> bool:
        return bool(self.redis)

    def redacted_url(self) -> str:
        """The Redis URL without its password (for logs)."""
        u = urlsplit(self.redis)
        host = u.hostname or ""
        port = f":{u.port}" if u.port else ""
        return f"{u.scheme}://{host}{port}{u.path}"


SECTION = Section(
    "coordination",
    ("redis", "on_unavailable", "key_prefix", "timeout", "rebuild_wait", "token_window"),
)


def parse_coordination(t: Table) -> CoordinationConfig:
    d = CoordinationConfig()
    redis = t.text("redis", d.redis)
    if redis:
        try:
            u = urlsplit(redis)
            ok = u.scheme in ("redis", "rediss", "unix") and (u.scheme == "unix" or u.hostname)
            _ = u.port
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(field="coordination.redis", reason="expected redis://HOST:PORT/DB")
    prefix = t.text("key_prefix", d.key_prefix)
    if not prefix or any(c in prefix for c in "{} \t\r\n"):
        raise ConfigError(
            field="coordination.key_prefix", reason="must be non-empty, without braces or spaces"
        )
    c = CoordinationConfig(
        redis=redis,
        on_unavailable=t.choice("on_unavailable", d.on_unavailable),
        key_prefix=prefix,
        timeout=t.duration("timeout", d.timeout),
        rebuild_wait=t.duration("rebuild_wait", d.rebuild_wait),
        token_window=t.duration("token_window", d.token_window),
    )
    if not 0.01 <= c.timeout <= 60:
        raise ConfigError(field="coordination.timeout", reason="must be between 10ms and 60s")
    if not 0 <= c.rebuild_wait <= 60:
        raise ConfigError(field="coordination.rebuild_wait", reason="must be between 0s and 60s")
    if not 0.01 <= c.token_window <= 1.0:
        raise ConfigError(field="coordination.token_window", reason="must be between 10ms and 1s")
    t.done()
    return c
