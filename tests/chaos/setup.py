"""A chaos configuration file, written as TOML so real `maildispatch run` processes read it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

AUTHOR = "chaos-author.example"
DEST = "chaos-dest.example"
PLATFORM = ("send1.chaos-platform.example", "send2.chaos-platform.example")
SOURCE_IPS = (("127.0.0.2", 3), ("127.0.0.3", 2), ("127.0.0.4", 1))

# Fast retries and short waits: the chaos must converge within minutes. data_timeout is
# short on purpose, so that "never replying" becomes ambiguous quickly (DESIGN.md warns
# that short timeouts manufacture ambiguity: here that is the point).
DISPATCH: dict[str, Any] = {
    "claim_batch": 50,
    "max_sessions": 30,
    "sessions_per_host": 5,
    "messages_per_session": 50,
    "retry_schedule": ["1s", "2s"],
    "max_attempts": 25,
    "poll_interval": "100ms",
    "shutdown_timeout": "5s",
}
SMTP: dict[str, Any] = {
    "connect_timeout": "2s",
    "command_timeout": "3s",
    "data_timeout": "3s",
    "starttls": "never",
}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _table(name: str, values: Mapping[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in values.items())


def write_config(
    work: Path,
    *,
    sink_port: int,
    backend: str = "sqlite",
    dsn: str = "",
    dispatch: Mapping[str, Any] | None = None,
    smtp: Mapping[str, Any] | None = None,
    key_dir: Path | None = None,
    ambiguous: str = "hold",
    redis: str = "",
) -> Path:
    """Write `work/chaos.toml` (queue in `work`, keys in `key_dir`) and return its path."""
    keys = key_dir or work / "keys"
    queue: dict[str, Any] = {"backend": backend}
    if backend == "postgres":
        queue["dsn"] = dsn
    else:
        # NORMAL survives any process crash (the chaos here); FULL only adds power loss.
        queue.update(path=str(work / "queue.db"), synchronous="NORMAL")
    parts = [
        f"state_dir = {_toml(str(work / 'state'))}\n",
        _table("queue", queue),
        _table("dispatch", {**DISPATCH, **(dispatch or {})}),
        _table("smtp", {**SMTP, **(smtp or {})}),
        _table("verp", {"prefix": "b", "secret_file": str(work / "verp.key")}),
        _table("streams.transactional", {"max_age": "1d", "ambiguous": ambiguous}),
        _table("dkim", {"create_missing": True}),
    ]
    if redis:
        parts.append(
            _table("coordination", {"redis": redis, "timeout": "500ms", "rebuild_wait": "1s"})
        )
    for d in (AUTHOR, *PLATFORM):
        parts.append(
            "[[dkim.keys]]\n"
            + "".join(
                f"{k} = {_toml(v)}\n"
                for k, v in {"domain": d, "selector": "s1", "file": str(keys / f"{d}.pem")}.items()
            )
        )
    parts.append(
        '[[accounts]]\nname = "chaos"\nauthor_domains = ' + _toml([AUTHOR]) + '\npool = "main"\n'
    )
    parts.append('[[pools]]\nname = "main"\n')
    for i, (addr, weight) in enumerate(SOURCE_IPS):
        parts.append(
            f'[[pools.ips]]\naddress = "{addr}"\nehlo = "mta{i}.chaos-platform.example"\n'
            f"weight = {weight}\n"
        )
    for d in PLATFORM:
        parts.append(f'[[pools.domains]]\ndomain = "{d}"\nweight = 1\n')
    parts.append(_table("routes", {DEST: f"127.0.0.1:{sink_port}"}))
    path = work / "chaos.toml"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def payload(seed: int, i: int, **extra: Any) -> dict[str, Any]:
    """Message `i` of a run: its idempotency key makes a retried enqueue harmless."""
    p: dict[str, Any] = {
        "account": "chaos",
        "idempotency_key": f"chaos-{seed}-{i}",
        "from": f"Chaos <news@{AUTHOR}>",
        "to": f"r{i}@{DEST}",
        "subject": f"chaos {seed} message {i}",
        "text": f"Message {i} of chaos run {seed}.\nNothing lost, nothing twice.\n",
    }
    p.update(extra)
    return p
