"""docs/configuration.md lists exactly the keys the parser knows (both ways).

The parser's keys come from the code: every table is a `Section` declaring its keys, and a
`Table` refuses to read an undeclared key or to finish without reading a declared one.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest

from dispatcher.config import ConfigError, parse_config
from dispatcher.config.table import SECTIONS, Section

REPO = Path(__file__).resolve().parents[3]
REFERENCE = REPO / "docs" / "configuration.md"

# `[shaping.NAME]`: upper case stands for a name the operator chooses.
_HEADING = re.compile(r"^## (?:top level|`(\[\[?[a-zA-Z_.]+\]\]?)`)\s*$")
_ROW = re.compile(r"^\| `([^`]+)` \|")


def documented() -> dict[str, set[str]]:
    """TOML header (`[queue]`, `[[pools.ips]]`, `top level`) -> the keys its table lists."""
    out: dict[str, set[str]] = {}
    current: str | None = None
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            m = _HEADING.match(line)
            assert m, f"unexpected heading in {REFERENCE.name}: {line!r}"
            current = m.group(1) or "top level"
            assert current not in out, f"{current} documented twice"
            out[current] = set()
        elif current is not None and (row := _ROW.match(line)):
            out[current].add(row.group(1))
    return out


def test_every_section_and_key_is_documented_and_nothing_else() -> None:
    parser = {s.header: set(s.keys) for s in SECTIONS.values()}
    docs = documented()
    assert sorted(docs) == sorted(parser), "sections: parser vs docs/configuration.md"
    for header, keys in parser.items():
        assert docs[header] == keys, f"{header}: parser knows {sorted(keys)}"


def test_sections_cover_what_parse_config_accepts() -> None:
    """The repository's config reads every section (declared keys are all read, or Table
    raises), and a key nobody declared is refused in every section."""
    raw = tomllib.loads((REPO / "config.toml").read_text())
    parse_config(raw, base_dir=REPO)
    for section in SECTIONS.values():
        if section.free_form:
            continue
        assert section.allowed() >= set(section.keys)


# A valid entry for arrays of tables the repository's config.toml does not have.
EXAMPLES: dict[str, dict[str, object]] = {
    "categories[]": {"category": "SpamBlock", "code": "5xx"},
    "pools[].ips[].warmup": {"schedule": "standard", "started": "2026-12-01"},
}
# Tables whose name is the operator's (`[shaping.NAME]`): the name used for the probe.
NAMED = {"shaping.NAME": "google"}


def _table_at(raw: dict[str, object], section: Section) -> dict[str, object]:
    """The first table of `section` in `raw`, created (valid) when absent."""
    if section.parent is None:
        return raw
    parent = _table_at(raw, SECTIONS[section.parent])
    if section.is_array:
        items = parent.setdefault(section.name, [dict(EXAMPLES.get(section.pattern, {}))])
        assert isinstance(items, list)
        first = items[0]
        assert isinstance(first, dict)
        return first
    child = parent.setdefault(NAMED.get(section.pattern, section.name), {})
    assert isinstance(child, dict)
    if section.pattern == "pools[].ips[].warmup":
        parent["state"] = "warming"
        child.update(EXAMPLES[section.pattern])
    return child


@pytest.mark.parametrize("pattern", sorted(p for p, s in SECTIONS.items() if not s.free_form))
def test_an_undeclared_key_is_refused_in_every_section(pattern: str) -> None:
    raw = tomllib.loads((REPO / "config.toml").read_text())
    _table_at(raw, SECTIONS[pattern])["zz_not_a_key"] = 1
    with pytest.raises(ConfigError) as err:
        parse_config(raw, base_dir=REPO)
    assert err.value.key_path.endswith("zz_not_a_key")
    assert str(err.value).endswith("unknown key")


def test_defaults_are_the_typed_objects_and_the_engine_uses_them() -> None:
    """An absent section is its type's defaults; the engine's pieces default to config's."""
    from dispatcher.config import DispatchConfig, LogConfig, SmtpConfig
    from dispatcher.engine.outcomes import Classifier
    from dispatcher.routing.circuit import CircuitBreaker
    from dispatcher.smtp.session import SessionTimeouts

    raw = tomllib.loads((REPO / "config.toml").read_text())
    for name in ("dispatch", "smtp", "log"):
        raw.pop(name, None)
    config = parse_config(raw, base_dir=REPO)
    assert config.dispatch == DispatchConfig()
    assert config.smtp == SmtpConfig()
    assert config.log == LogConfig()
    assert config.smtp.send_ahead is True
    assert len(config.dispatch.retry_schedule) == 7
    assert Classifier().schedule == config.dispatch.retry_schedule
    assert Classifier().max_attempts == config.dispatch.max_attempts
    assert SessionTimeouts() == SessionTimeouts.from_config(config.smtp)
    params = inspect.signature(CircuitBreaker).parameters
    assert params["failures"].default == config.smtp.circuit_failures
    assert params["open_seconds"].default == config.smtp.circuit_open_seconds
