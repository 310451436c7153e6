"""`[[automation]]`: reply patterns or categories -> slow or pause one (IP, provider).

The types, the matching and the state are `ip_pools.automation`'s own; this reads and checks
the table (first match wins, in file order).
"""

from __future__ import annotations

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table
from ip_pools.automation import AutomationRule, AutomationRuleError

SECTION = Section(
    "automation[]",
    ("name", "match", "category", "action", "duration", "trigger", "factor", "steps"),
)


def parse_automation(top: Table) -> tuple[AutomationRule, ...]:
    rules: list[AutomationRule] = []
    for t in top.tables(SECTION):
        unknown = sorted(set(t.data) - set(SECTION.keys))
        if unknown:  # before "is required": a misspelt key is the better message
            raise ConfigError(field=t.key(unknown[0]), reason="unknown key")
        raw_cat = t.raw("category")
        if raw_cat is None:
            cats: list[str] = []
        elif isinstance(raw_cat, str):
            cats = [raw_cat]
        elif isinstance(raw_cat, list) and all(isinstance(c, str) for c in raw_cat):
            cats = list(raw_cat)
        else:
            raise ConfigError(
                field=t.key("category"), reason="expected a category name or a list of them"
            )
        pattern = None if t.raw("match") is None else t.text("match")
        trigger = None if t.raw("trigger") is None else t.text("trigger")
        if not t.has("action"):
            raise ConfigError(field=t.key("action"), reason="is required")
        if not t.has("duration"):
            raise ConfigError(field=t.key("duration"), reason="is required")
        try:
            rules.append(
                AutomationRule.build(
                    t.text("action", required=True),
                    t.duration("duration", 0),
                    pattern=pattern,
                    categories=cats,
                    trigger=trigger,
                    factor=t.number("factor", 0.5),
                    steps=t.integer("steps", 4),
                    name=t.text("name", ""),
                )
            )
        except AutomationRuleError as e:
            raise ConfigError(field=t.key(e.field), reason=e.reason) from None
        t.done()
    return tuple(rules)
