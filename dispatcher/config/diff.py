"""What a reload would change: two validated configs compared key by key.

Lists of named things are compared by name, not position (`pools[warm].ips[198.51.100.7]`),
so reordering a file is no change, and an IP whose state goes `active -> draining` reads as
exactly that. `fingerprint` is the hash a running process exposes as a metric, so a fleet
whose nodes run different files shows it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.config.document import Config
from ip_pools.automation import AutomationRule
from ip_pools.categories import CategoryRule, CategoryTable

# Changes that a reload does not apply (the process must restart for them).
RESTART_ONLY = ("queue.", "metrics.", "log.", "state_dir", "verp.")
# Named lists: the field that names an item.
_NAMES = {"PoolSpec": "name", "SourceIp": "address", "PlatformDomain": "domain"}
_NAMES |= {"AccountConfig": "name", "DkimKeyConfig": "selector"}
_SKIP = {"source", "key_path"}


@dataclass(frozen=True, slots=True)
class Change:
    """One key path whose value differs; `old`/`new` None: added/removed."""

    path: str
    old: str | None
    new: str | None

    @property
    def restart_only(self) -> bool:
        return self.path.startswith(RESTART_ONLY)

    def __str__(self) -> str:
        if self.old is None:
            text = f"+ {self.path} = {self.new}"
        elif self.new is None:
            text = f"- {self.path} (was {self.old})"
        else:
            text = f"~ {self.path}: {self.old} -> {self.new}"
        return text + ("  (needs a restart)" if self.restart_only else "")


def _scalar(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, re.Pattern):
        return repr(value.pattern)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, frozenset | set):
        return "[" + ", ".join(sorted(map(str, value))) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def _flatten(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, CategoryTable):
        for i, rule in enumerate(value.overrides):
            yield f"{path}[{i}]", rule.describe()
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if isinstance(value, AutomationRule | CategoryRule):
            yield path, value.describe()
            return
        for f in dataclasses.fields(value):
            if f.name in _SKIP:
                continue
            key = f"{path}.{f.name}" if path else f.name
            if f.name == "dsn":  # may hold a password: whether it is set, never its value
                yield key, "(set)" if getattr(value, "dsn", "") else "(empty)"
                continue
            yield from _flatten(getattr(value, f.name), key)
        return
    if isinstance(value, Mapping):
        for k in sorted(value):
            yield from _flatten(value[k], f"{path}.{k}")
        return
    if isinstance(value, tuple | list) and not value:
        return  # an empty list of named items: their paths are absent (added ones show)
    if isinstance(value, tuple | list) and dataclasses.is_dataclass(value[0]):
        name = _NAMES.get(type(value[0]).__name__)
        for i, item in enumerate(value):
            label = getattr(item, name) if name else i
            if type(item).__name__ == "DkimKeyConfig":
                label = f"{item.domain}/{item.selector}"
            yield from _flatten(item, f"{path}[{label}]")
        return
    if isinstance(value, tuple | list):
        yield path, "[" + ", ".join(_scalar(v) for v in value) + "]"
        return
    yield path, _scalar(value)


def flatten(config: Config) -> dict[str, str]:
    """Every leaf of `config` by key path (secrets shown as set or not, never their value)."""
    return dict(_flatten(config, ""))


def diff(old: Config, new: Config) -> list[Change]:
    """What differs, in key-path order. Items added or removed as a whole (an IP, a rule)
    are one change each, not one per field."""
    a, b = flatten(old), flatten(new)
    changes: list[Change] = []
    whole_items = _whole_items(a, b)
    reported: set[str] = set()
    for path in sorted(set(a) | set(b)):
        item = next((w for w in whole_items if path.startswith(w + ".")), None)
        if item is not None:
            if item not in reported:
                reported.add(item)
                side = b if item in _items(b) else a
                summary = _summary(side, item)
                added = item in _items(b)
                changes.append(Change(item, None if added else summary, summary if added else None))
            continue
        if a.get(path) != b.get(path):
            changes.append(Change(path, a.get(path), b.get(path)))
    return changes


_ITEM = re.compile(r"^(.*?\[[^\]]+\])")


def _items(flat: Mapping[str, str]) -> set[str]:
    """Every named item's path (`pools[warm]`, `pools[warm].ips[198.51.100.7]`)."""
    out: set[str] = set()
    for path in flat:
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            head = ".".join(parts[:i])
            if head.endswith("]") and "." in path[len(head) :][:1]:
                out.add(head)
    return out


def _whole_items(a: Mapping[str, str], b: Mapping[str, str]) -> list[str]:
    """Items present on one side only, outermost first."""
    ia, ib = _items(a), _items(b)
    only = sorted(ia ^ ib, key=len)
    outer: list[str] = []
    for item in only:
        if not any(item.startswith(o + ".") for o in outer):
            outer.append(item)
    return outer


def _summary(flat: Mapping[str, str], item: str) -> str:
    fields = {p[len(item) + 1 :]: v for p, v in flat.items() if p.startswith(item + ".")}
    keep = {k: v for k, v in fields.items() if "." not in k and "[" not in k}
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(keep.items())) + "}"


def fingerprint(config: Config) -> str:
    """A short hash of the config's meaning (not its bytes): equal for two files that
    differ only in comments, order of named items or formatting."""
    text = "\n".join(f"{k}={v}" for k, v in sorted(flatten(config).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
