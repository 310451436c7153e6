"""What an account may send: its author domains and pool, checked against config.toml.

Accounts live in the store. A config-seeded account that is still declared in config takes
its author domains and pool from config (ops edit them there, and a reload applies); any
other account uses what the store holds, checked against the configured DKIM keys and
pools when it is created.
"""

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.config import AccountConfig, Config, ConfigError, check_domain
from queues.accounts import Account, AccountError


def check_profile(
    config: Config, author_domains: Sequence[str], pool: str | None
) -> tuple[tuple[str, ...], str | None]:
    """Author domains need a [[dkim.keys]] entry (messages are signed with d= them); the
    pool must be configured. Raises AccountError naming the field."""
    keyed = {k.domain for k in config.dkim.keys}
    out: list[str] = []
    for i, d in enumerate(author_domains):
        field = f"author_domains[{i}]"
        try:
            dom = check_domain(d, field)
        except ConfigError as e:
            raise AccountError(field=field, reason=e.reason) from None
        if dom not in keyed:
            raise AccountError(
                field=field, reason=f"no [[dkim.keys]] entry for {dom} in the configuration"
            )
        out.append(dom)
    if pool is not None and config.pool(pool) is None:
        raise AccountError(field="pool", reason=f"no pool named {pool!r}")
    return tuple(dict.fromkeys(out)), pool


def sender_profile(account: Account, config: Config) -> AccountConfig:
    """The intake view of a stored account: `name` is the account id (messages store it)."""
    declared = config.account(account.id) if account.config_seeded else None
    if declared is not None:
        return AccountConfig(
            name=account.id,
            author_domains=declared.author_domains,
            pool=declared.pool,
            allow_broadcast_without_unsubscribe=declared.allow_broadcast_without_unsubscribe,
        )
    return AccountConfig(
        name=account.id,
        author_domains=account.author_domains,
        pool=account.pool or config.pools[0].name,
    )
