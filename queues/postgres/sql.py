"""Loads the backend's SQL from the `.sql` files beside it (read once, at import).

`queries.sql` is split on `-- name: <query>` lines; migrations are `migrations/NNNN_*.sql`,
applied in the order of their number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: `version` is the number its file name starts with."""

    version: int
    name: str
    sql: str


def _load_queries(filename: str = "queries.sql") -> dict[str, str]:
    text = resources.files(__package__).joinpath(filename).read_text("utf-8")
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _load_migrations() -> tuple[Migration, ...]:
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    # Numbers are handed out to parallel work ahead of time, so one may land before a
    # smaller one: `migrate` applies every step not yet applied, in number order.
    if not versions or versions[0] != 1 or len(set(versions)) != len(versions):
        raise RuntimeError(f"migrations must be numbered from 1, each once, found {versions}")
    return tuple(found)


QUERIES: dict[str, str] = _load_queries()
ACCOUNT_QUERIES: dict[str, str] = _load_queries("accounts.sql")
REPORT_QUERIES: dict[str, str] = _load_queries("reports.sql")
SUPPRESSION_QUERIES: dict[str, str] = _load_queries("suppressions.sql")
DELIVERABILITY_QUERIES: dict[str, str] = _load_queries("deliverability.sql")
MIGRATIONS: tuple[Migration, ...] = _load_migrations()
LATEST_VERSION: int = MIGRATIONS[-1].version
KNOWN_VERSIONS: frozenset[int] = frozenset(m.version for m in MIGRATIONS)
