"""The one loader of the backends' SQL: named statements from `.sql` files beside them.

A file of named statements is split on `-- name: <name>` lines (procrastinate's habit): each
query is written once, in SQL, and read once at import. `q.claim` and `q["claim"]` both give
the statement; a missing name fails loudly, naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from importlib import resources
from types import MappingProxyType

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def read_sql(package: str, filename: str) -> str:
    """The text of `filename` inside `package` (works from a wheel as from a checkout)."""
    return resources.files(package).joinpath(filename).read_text(encoding="utf-8")


def parse_named(text: str, source: str = "<sql>") -> dict[str, str]:
    """Split a file of `-- name: <name>` sections into {name: statement}."""
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{source}: query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


class NamedQueries:
    """The named statements of one file. No public methods: every attribute is a query (one
    is called `get`), so this is deliberately not a `Mapping`."""

    def __init__(self, statements: Mapping[str, str], source: str) -> None:
        self._statements = MappingProxyType(dict(statements))
        self._source = source

    def __getitem__(self, name: str) -> str:
        try:
            return self._statements[name]
        except KeyError:
            raise KeyError(f"no query named {name!r} in {self._source}") from None

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._statements[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in {self._source}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._statements

    def __iter__(self) -> Iterator[str]:
        return iter(self._statements)

    def __len__(self) -> int:
        return len(self._statements)


def load_queries(package: str, filename: str) -> NamedQueries:
    """The named statements of `filename` inside `package`."""
    return NamedQueries(parse_named(read_sql(package, filename), filename), f"{package}/{filename}")
