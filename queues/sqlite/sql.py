"""The SQL of the SQLite backend, read once from the `.sql` files beside this module."""

from __future__ import annotations

from functools import cache
from typing import Final

from queues.sql import NamedQueries, load_queries, read_sql


@cache
def schema() -> str:
    """The schema script (idempotent statements)."""
    return read_sql(__package__, "schema.sql")


Q: Final[NamedQueries] = load_queries(__package__, "queries.sql")
A: Final[NamedQueries] = load_queries(__package__, "accounts.sql")
R: Final[NamedQueries] = load_queries(__package__, "reports.sql")
S: Final[NamedQueries] = load_queries(__package__, "suppressions.sql")
