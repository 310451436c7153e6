"""`[[accounts]]`: the accounts configured in the file, their author domains and pool."""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table, field_default
from dispatcher.config.values import check_domain


@dataclass(frozen=True, slots=True)
class AccountConfig:
    name: str
    author_domains: tuple[str, ...]
    pool: str  # default: the first [[pools]] entry
    allow_broadcast_without_unsubscribe: bool = False
    # Pools a payload may name besides `pool` (a payload naming any other is refused).
    pools: tuple[str, ...] = ()

    @property
    def allowed_pools(self) -> frozenset[str]:
        """Every pool this account's mail may leave from."""
        return frozenset((self.pool, *self.pools))


SECTION = Section(
    "accounts[]",
    ("name", "author_domains", "pool", "pools", "allow_broadcast_without_unsubscribe"),
)


def parse_accounts(
    top: Table, key_domains: Set[str], pool_names: Sequence[str]
) -> tuple[AccountConfig, ...]:
    accounts = tuple(_parse_account(at, key_domains, pool_names) for at in top.tables(SECTION))
    if len({a.name for a in accounts}) != len(accounts):
        raise ConfigError(field="accounts", reason="account names must be unique")
    return accounts


def _parse_account(t: Table, key_domains: Set[str], pool_names: Sequence[str]) -> AccountConfig:
    name = t.text("name", required=True)
    doms_raw = t.raw("author_domains", [])
    if not isinstance(doms_raw, list) or not doms_raw:
        raise ConfigError(
            field=t.key("author_domains"), reason="expected a non-empty list of domains"
        )
    author = tuple(
        check_domain(x, f"{t.key('author_domains')}[{i}]") for i, x in enumerate(doms_raw)
    )
    for i, dom in enumerate(author):
        if dom not in key_domains:
            raise ConfigError(
                field=f"{t.key('author_domains')}[{i}]",
                reason=f"no [[dkim.keys]] entry for author domain {dom}",
            )
    pool = t.text("pool", pool_names[0])
    if pool not in pool_names:
        raise ConfigError(field=t.key("pool"), reason=f"no pool named {pool!r}")
    extra_raw = t.raw("pools", [])
    if not isinstance(extra_raw, list):
        raise ConfigError(field=t.key("pools"), reason="expected a list of pool names")
    extra: list[str] = []
    for i, p in enumerate(extra_raw):
        if not isinstance(p, str) or p not in pool_names:
            raise ConfigError(field=f"{t.key('pools')}[{i}]", reason=f"no pool named {p!r}")
        extra.append(p)
    account = AccountConfig(
        name=name,
        author_domains=author,
        pool=pool,
        allow_broadcast_without_unsubscribe=t.flag(
            "allow_broadcast_without_unsubscribe",
            field_default(AccountConfig, "allow_broadcast_without_unsubscribe"),
        ),
        pools=tuple(extra),
    )
    t.done()
    return account
