"""The PostgreSQL backend's SQL from the `.sql` files beside it (read once, at import).

Named statements through `queues.sql` (the loader both backends use); migrations are
`migrations/NNNN_*.sql`, applied in the order of their number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from queues.sql import NamedQueries, load_queries

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: `version` is the number its file name starts with."""

    version: int
    name: str
    sql: str


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


QUERIES: NamedQueries = load_queries(__package__, "queries.sql")
ACCOUNT_QUERIES: NamedQueries = load_queries(__package__, "accounts.sql")
REPORT_QUERIES: NamedQueries = load_queries(__package__, "reports.sql")
SUPPRESSION_QUERIES: NamedQueries = load_queries(__package__, "suppressions.sql")
DELIVERABILITY_QUERIES: NamedQueries = load_queries(__package__, "deliverability.sql")
MIGRATIONS: tuple[Migration, ...] = _load_migrations()
LATEST_VERSION: int = MIGRATIONS[-1].version
KNOWN_VERSIONS: frozenset[int] = frozenset(m.version for m in MIGRATIONS)
