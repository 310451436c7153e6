"""`[security]`: local-file permission checks on secrets (DKIM keys, the VERP secret)."""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.config.table import Section, Table


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    # A DKIM key or VERP secret readable by group or others is refused at load, unless this
    # is true (orchestrators that mount secrets 0644).
    allow_insecure_permissions: bool = False


SECTION = Section("security", ("allow_insecure_permissions",))


def parse_security(t: Table) -> SecurityConfig:
    security = SecurityConfig(
        allow_insecure_permissions=t.flag(
            "allow_insecure_permissions", SecurityConfig().allow_insecure_permissions
        )
    )
    t.done()
    return security
