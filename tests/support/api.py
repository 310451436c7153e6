"""Config files for the accounts CLI and the HTTP API tests, on either backend."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest

AUTHOR = "acme-news.example"
SECOND_AUTHOR = "creator-letters.example"
PLATFORM = "send1.platform.example"
DEST = "dest.example"


def pg_dsn(migrated: bool = False) -> str:
    """A fresh PostgreSQL database (skips the test when the server is unreachable)."""
    from tests.support.postgres import create_test_database

    try:
        return asyncio.run(create_test_database(migrated=migrated))
    except OSError as e:
        pytest.skip(f"PostgreSQL unreachable: {e}")


def write_config(tmp: Path, *, backend: str = "sqlite", dsn: str = "", extra: str = "") -> Path:
    """A config with two config accounts (acme, creator), keys made on first use."""
    queue = (
        f'backend = "postgres"\ndsn = "{dsn}"'
        if backend == "postgres"
        else f'path = "{tmp / "state" / "queue.db"}"'
    )
    keys = tmp / "keys"
    text = f"""
state_dir = "{tmp / "state"}"
[queue]
{queue}
[dkim]
create_missing = true
[[dkim.keys]]
domain = "{AUTHOR}"
selector = "s1"
file = "{keys / f"{AUTHOR}.s1.pem"}"
[[dkim.keys]]
domain = "{SECOND_AUTHOR}"
selector = "s1"
file = "{keys / f"{SECOND_AUTHOR}.s1.pem"}"
[[dkim.keys]]
domain = "{PLATFORM}"
selector = "s1"
file = "{keys / f"{PLATFORM}.s1.pem"}"
[[accounts]]
name = "acme"
author_domains = ["{AUTHOR}"]
[[accounts]]
name = "creator"
author_domains = ["{SECOND_AUTHOR}"]
[[pools]]
name = "main"
[[pools.ips]]
address = "127.0.0.2"
ehlo = "mta1.platform.example"
[[pools.domains]]
domain = "{PLATFORM}"
{extra}
"""
    tomllib.loads(text)
    path = tmp / "config.toml"
    path.write_text(text)
    return path
