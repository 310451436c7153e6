"""Building a real, small configuration for engine tests (SQLite queue in a temp dir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from dispatcher.config import Config, parse_config
from dispatcher.engine.runtime import Runtime

AUTHOR = "acme-news.example"
PLATFORM = ("send1.platform.example", "send2.platform.example")
DEST = "dest.example"


def make_config(
    tmp: Path,
    *,
    routes: dict[str, str] | None = None,
    ips: tuple[tuple[str, int], ...] = (("127.0.0.2", 1),),
    dispatch: dict[str, Any] | None = None,
    streams: dict[str, Any] | None = None,
    queue: dict[str, Any] | None = None,
    key_dir: Path | None = None,
    ip_fields: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Config:
    """A config with one account, one pool, RSA keys created on first use in `key_dir`;
    `ip_fields` adds keys to an IP's table (state, warmup), `extra` whole sections."""
    keys = key_dir or tmp / "keys"
    raw: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "queue": {"backend": "sqlite", "path": str(tmp / "state" / "queue.db"), **(queue or {})},
        "dispatch": {
            "claim_batch": 100,
            "sessions_per_host": 4,
            "shutdown_timeout": "5s",
            "poll_interval": "50ms",
            **(dispatch or {}),
        },
        "smtp": {"connect_timeout": "2s", "command_timeout": "5s", "data_timeout": "10s"},
        "dkim": {
            "create_missing": True,
            "keys": [
                {"domain": d, "selector": "s1", "file": str(keys / f"{d}.s1.pem")}
                for d in (AUTHOR, *PLATFORM)
            ],
        },
        "accounts": [{"name": "acme", "author_domains": [AUTHOR], "pool": "main"}],
        "pools": [
            {
                "name": "main",
                "ips": [
                    {
                        "address": a,
                        "ehlo": f"mta{i}.platform.example",
                        "weight": w,
                        **(ip_fields or {}).get(a, {}),
                    }
                    for i, (a, w) in enumerate(ips)
                ],
                "domains": [{"domain": d, "weight": 1} for d in PLATFORM],
            }
        ],
        "streams": streams or {},
        "routes": routes or {},
        **(extra or {}),  # more sections: providers, shaping, warmup, ...
    }
    return parse_config(raw, base_dir=tmp)


def payload(i: int, **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "account": "acme",
        "idempotency_key": f"k-{i}",
        "from": f"Acme <news@{AUTHOR}>",
        "to": f"reader{i}@{DEST}",
        "subject": f"Hello {i}",
        "text": f"Hi reader {i},\nthis is the letter.\n",
    }
    p.update(extra)
    return p


class RuntimeFactory(Protocol):
    """The `open_runtime` fixture: opens a Runtime on `config`, closed at teardown."""

    async def __call__(self, config: Config) -> Runtime: ...
