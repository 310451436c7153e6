"""The SQL of the SQLite backend, read once from the `.sql` files beside this module."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Final

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def _read(filename: str) -> str:
    return resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")


def parse_named(text: str) -> dict[str, str]:
    """Split a file of `-- name: <name>` sections into {name: statement}."""
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@cache
def schema() -> str:
    """The schema script (idempotent statements)."""
    return _read("schema.sql")


class Queries:
    """Named statements; attribute access fails loudly on a missing name."""

    def __init__(self, statements: dict[str, str]) -> None:
        self._statements = MappingProxyType(statements)

    def __getattr__(self, name: str) -> str:
        try:
            return self._statements[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in queries.sql") from None


Q: Final = Queries(parse_named(_read("queries.sql")))
A: Final = Queries(parse_named(_read("accounts.sql")))
R: Final = Queries(parse_named(_read("reports.sql")))
S: Final = Queries(parse_named(_read("suppressions.sql")))
