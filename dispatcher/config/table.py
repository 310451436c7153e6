"""Reading one TOML table: typed getters that name key paths, and the registry of sections.

Every table of config.toml is a `Section` declared once, in the module that parses it, with
the keys it knows. A `Table` reads only declared keys, refuses undeclared ones with
"unknown key", and checks that every declared key was read: so `SECTIONS` is exactly what the
parser accepts, and docs/configuration.md is compared against it by a test.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, TypeVar

from dispatcher.config.errors import ConfigError
from dispatcher.config.values import parse_duration

E = TypeVar("E", bound=enum.StrEnum)

SECTIONS: dict[str, Section] = {}


def field_default(cls: type[Any], name: str) -> Any:
    """The default of dataclass field `name`: so a section's defaults live on its type alone."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            break
    raise RuntimeError(f"{cls.__name__}.{name} has no default")


class Section:
    """One table of config.toml, named by a pattern: `""` (top level), `queue`, `pools[]`,
    `pools[].ips[]`, `streams.broadcast`. `keys` are its value keys (child tables are
    sections of their own); `free_form` tables (routes) take any key."""

    def __init__(self, pattern: str, keys: tuple[str, ...], *, free_form: bool = False) -> None:
        if pattern in SECTIONS:
            raise RuntimeError(f"config section {pattern!r} declared twice")
        self.pattern = pattern
        self.keys = keys
        self.free_form = free_form
        parent, _, last = pattern.rpartition(".")
        self.parent = parent if pattern else None
        self.name = last.removesuffix("[]")
        self.is_array = last.endswith("[]")
        SECTIONS[pattern] = self

    @property
    def header(self) -> str:
        """How the table is written in TOML: `[queue]`, `[[pools.ips]]`, or `top level`."""
        if not self.pattern:
            return "top level"
        dotted = self.pattern.replace("[]", "")
        return f"[[{dotted}]]" if self.is_array else f"[{dotted}]"

    def children(self) -> tuple[Section, ...]:
        return tuple(s for s in SECTIONS.values() if s.parent == self.pattern)

    def allowed(self) -> frozenset[str]:
        return frozenset(self.keys) | {c.name for c in self.children()}

    def __repr__(self) -> str:
        return f"Section({self.pattern!r})"


class Table:
    """Reads one TOML table of `section`, tracking key paths and refusing unknown keys."""

    def __init__(self, data: object, path: str, section: Section) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(field=path, reason="expected a table")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.section = section
        self._allowed = section.allowed()
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def raw(self, name: str, default: object = None) -> Any:
        if not self.section.free_form and name not in self._allowed:
            raise RuntimeError(f"{self.section!r} reads {name!r} but does not declare it")
        self._seen.add(name)
        return self.data.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.data

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        v = self.raw(name, default)
        if v is None and required:
            raise ConfigError(field=self.key(name), reason="is required")
        if v is None:
            return ""
        if not isinstance(v, str):
            raise ConfigError(
                field=self.key(name), reason=f"expected a string, got {type(v).__name__}"
            )
        return v

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        v = self.raw(name, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(field=self.key(name), reason=f"expected an integer, got {v!r}")
        if minimum is not None and v < minimum:
            raise ConfigError(field=self.key(name), reason=f"must be at least {minimum}")
        return v

    def number(self, name: str, default: float) -> float:
        v = self.raw(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(field=self.key(name), reason=f"expected a number, got {v!r}")
        return float(v)

    def flag(self, name: str, default: bool) -> bool:
        v = self.raw(name, default)
        if not isinstance(v, bool):
            raise ConfigError(field=self.key(name), reason=f"expected true or false, got {v!r}")
        return v

    def duration(self, name: str, default: float | str) -> float:
        return parse_duration(self.raw(name, default), self.key(name))

    def choice(self, name: str, default: E) -> E:
        """One of the values of `default`'s StrEnum."""
        kind = type(default)
        v = self.text(name, default.value)
        try:
            return kind(v)
        except ValueError:
            choices = ", ".join(m.value for m in kind)
            raise ConfigError(
                field=self.key(name), reason=f"must be one of {choices}; got {v!r}"
            ) from None

    def table(self, section: Section) -> Table:
        """The child table `section` (absent = empty)."""
        self._check_child(section)
        return Table(self.raw(section.name, {}), self.key(section.name), section)

    def tables(self, section: Section) -> list[Table]:
        """The array of tables `section` (absent = empty)."""
        self._check_child(section)
        v = self.raw(section.name, [])
        if not isinstance(v, list):
            raise ConfigError(field=self.key(section.name), reason="expected an array of tables")
        base = self.key(section.name)
        return [Table(item, f"{base}[{i}]", section) for i, item in enumerate(v)]

    def _check_child(self, section: Section) -> None:
        if section.parent != self.section.pattern:
            raise RuntimeError(f"{section!r} is not a child of {self.section!r}")

    def done(self) -> None:
        """Refuse keys nobody read; the first (sorted) is named."""
        extra = sorted(set(self.data) - self._seen)
        if extra:
            raise ConfigError(field=self.key(extra[0]), reason="unknown key")
        if not self.section.free_form:
            unread = set(self.section.keys) - self._seen
            if unread:
                raise RuntimeError(f"{self.section!r} declares {sorted(unread)} but never reads")
