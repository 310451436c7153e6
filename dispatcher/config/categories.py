"""`[[categories]]`: operators' reply-category rules, matched before the defaults.

The types and the matching are `ip_pools.categories`' own; this reads and checks the table.
"""

from __future__ import annotations

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table
from ip_pools.categories import CategoryRule, CategoryRuleError, CategoryTable

SECTION = Section("categories[]", ("code", "enhanced", "match", "category"))


def parse_categories(top: Table) -> CategoryTable:
    """Every rule, in file order (first match wins)."""
    rules: list[CategoryRule] = []
    for ct in top.tables(SECTION):
        code = ct.raw("code")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int | str)):
            raise ConfigError(
                field=ct.key("code"), reason=f'expected 550, "5xx" or "none", got {code!r}'
            )
        enhanced = ct.text("enhanced") or None
        # Absent is no pattern; present but empty is refused by CategoryRule.build.
        pattern = None if ct.raw("match") is None else ct.text("match")
        try:
            rules.append(
                CategoryRule.build(
                    ct.text("category", required=True),
                    code=code,
                    enhanced=enhanced,
                    pattern=pattern,
                )
            )
        except CategoryRuleError as e:
            raise ConfigError(field=ct.key(e.field), reason=e.reason) from None
        ct.done()
    return CategoryTable(rules)
