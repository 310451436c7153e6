"""Accounts and API keys in the store, held against every backend (fixtures in conftest.py)."""

from __future__ import annotations

import asyncio

import pytest

from queues.accounts import (
    AccountError,
    AccountExists,
    AccountNotFound,
    AccountSeed,
    AccountStatus,
    KeyScope,
    hash_token,
    token_key_id,
    token_matches,
)
from queues.protocol import Queue
from tests.support.queues import MakeQueue

SEEDS = [
    AccountSeed("acme", ("acme-news.example",), "warm"),
    AccountSeed("creator", ("creator-letters.example",), None),
]


async def test_created_account_has_a_fresh_immutable_id(queue: Queue) -> None:
    a = await queue.create_account("Acme Ltd", author_domains=["acme-news.example"], pool="warm")
    b = await queue.create_account("Other")
    assert a.id != b.id and a.id.startswith("acc_")
    assert (a.name, a.status, a.trusted, a.config_seeded) == (
        "Acme Ltd",
        AccountStatus.ACTIVE,
        False,
        False,
    )
    assert (a.author_domains, a.pool) == (("acme-news.example",), "warm")
    assert await queue.get_account(a.id) == a
    assert await queue.find_account("Acme Ltd") == a
    assert await queue.find_account(a.id) == a
    assert await queue.get_account("nope") is None
    assert await queue.find_account("nope") is None

    renamed = await queue.rename_account(a.id, "Acme Inc")
    assert (renamed.id, renamed.name) == (a.id, "Acme Inc")
    assert await queue.find_account("Acme Ltd") is None
    assert (await queue.find_account("Acme Inc")) == renamed


async def test_names_are_unique_and_checked(queue: Queue) -> None:
    a = await queue.create_account("one")
    b = await queue.create_account("two")
    with pytest.raises(AccountExists) as err:
        await queue.create_account("one")
    assert err.value.field == "name"
    with pytest.raises(AccountExists) as err:
        await queue.rename_account(b.id, "one")
    assert err.value.field == "name"
    assert (await queue.get_account(b.id)).name == "two"  # type: ignore[union-attr]
    assert (await queue.rename_account(a.id, "one")).name == "one"  # its own name: fine
    with pytest.raises(AccountNotFound):
        await queue.rename_account("acc_missing", "three")
    for bad in ("", " padded ", "x" * 101, "tab\there"):
        with pytest.raises(AccountError) as err:
            await queue.create_account(bad)
        assert err.value.field == "name"
    with pytest.raises(AccountError) as err:
        await queue.create_account("ok", account_id="no spaces")
    assert err.value.field == "id"
    with pytest.raises(AccountExists) as err:
        await queue.create_account("another", account_id=a.id)
    assert err.value.field == "id"


async def test_listing_pages_by_cursor(queue: Queue) -> None:
    made = [await queue.create_account(f"name-{i}") for i in range(5)]
    first = await queue.list_accounts(limit=2)
    second = await queue.list_accounts(after=first[-1].id, limit=2)
    rest = await queue.list_accounts(after=second[-1].id, limit=10)
    seen = [a.id for a in first + second + rest]
    assert seen == sorted(a.id for a in made)


async def test_pause_and_resume(queue: Queue) -> None:
    a = await queue.create_account("pausable")
    assert (await queue.set_account_status(a.id, AccountStatus.PAUSED)).status == "paused"
    assert (await queue.get_account(a.id)).status is AccountStatus.PAUSED  # type: ignore[union-attr]
    assert (await queue.set_account_status(a.id, AccountStatus.ACTIVE)).status == "active"
    with pytest.raises(AccountNotFound):
        await queue.set_account_status("acc_missing", AccountStatus.PAUSED)


async def test_seeding_inserts_if_absent_and_never_overwrites(queue: Queue) -> None:
    assert sorted(await queue.seed_accounts(SEEDS)) == ["acme", "creator"]
    acme = await queue.get_account("acme")
    assert acme is not None
    assert (acme.name, acme.trusted, acme.config_seeded, acme.pool) == (
        "acme",
        True,
        True,
        "warm",
    )
    assert acme.author_domains == ("acme-news.example",)

    # An operator renames and pauses it; a restart seeds again from an edited config.
    await queue.rename_account("acme", "Acme Corp")
    await queue.set_account_status("acme", AccountStatus.PAUSED)
    edited = [AccountSeed("acme", ("other.example",), "cold"), *SEEDS[1:]]
    assert await queue.seed_accounts(edited) == []
    again = await queue.get_account("acme")
    assert again is not None
    assert (again.name, again.status, again.author_domains, again.pool) == (
        "Acme Corp",
        AccountStatus.PAUSED,
        ("acme-news.example",),
        "warm",
    )
    # Removed from config: still there.
    assert await queue.seed_accounts([]) == []
    assert await queue.get_account("creator") is not None


async def test_seed_whose_name_is_taken_is_not_inserted(queue: Queue) -> None:
    await queue.create_account("acme")
    assert await queue.seed_accounts(SEEDS[:1]) == []
    assert await queue.get_account("acme") is None


async def test_concurrent_seeding_inserts_each_account_once(make_queue: MakeQueue) -> None:
    queues = [await make_queue() for _ in range(4)]
    many = [AccountSeed(f"seed-{i}", ("acme-news.example",), None) for i in range(50)]
    results = await asyncio.gather(*(q.seed_accounts(many) for q in queues))
    inserted = [i for r in results for i in r]
    assert sorted(inserted) == sorted(s.id for s in many)
    assert len(await queues[0].list_accounts(limit=1000)) == 50


async def test_keys_are_shown_once_and_stored_as_hashes(queue: Queue) -> None:
    a = await queue.create_account("keyed")
    made = await queue.create_api_key(a.id, KeyScope.SEND, "wordpress plugin")
    assert made.token not in repr(made) and made.token not in repr(made.key)
    assert token_key_id(made.token) == made.key.id
    stored = await queue.get_api_key(made.key.id)
    assert stored is not None
    assert stored.secret_hash == hash_token(made.token) != made.token
    assert made.token not in repr(stored)
    assert (stored.account_id, stored.scope, stored.label, stored.active) == (
        a.id,
        KeyScope.SEND,
        "wordpress plugin",
        True,
    )
    assert token_matches(made.token, stored)
    assert not token_matches(made.token[:-1] + ("A" if made.token[-1] != "A" else "B"), stored)


async def test_several_keys_per_account_and_revocation(queue: Queue) -> None:
    a = await queue.create_account("rotating")
    b = await queue.create_account("bystander")
    old = await queue.create_api_key(a.id, "full")
    new = await queue.create_api_key(a.id, "send", "next")
    other = await queue.create_api_key(b.id, "full")
    assert [k.id for k in await queue.list_api_keys(a.id)] == [old.key.id, new.key.id]

    assert not await queue.revoke_api_key(b.id, old.key.id)  # not b's key
    assert await queue.revoke_api_key(a.id, old.key.id)
    assert not await queue.revoke_api_key(a.id, old.key.id)  # already revoked
    revoked = await queue.get_api_key(old.key.id)
    assert revoked is not None and not revoked.active and revoked.revoked_at is not None
    assert (await queue.get_api_key(new.key.id)).active  # type: ignore[union-attr]
    assert (await queue.get_api_key(other.key.id)).active  # type: ignore[union-attr]


async def test_key_needs_an_account_and_a_known_scope(queue: Queue) -> None:
    with pytest.raises(AccountNotFound):
        await queue.create_api_key("acc_missing", KeyScope.FULL)
    with pytest.raises(AccountNotFound):
        await queue.list_api_keys("acc_missing")
    a = await queue.create_account("scoped")
    with pytest.raises(AccountError) as err:
        await queue.create_api_key(a.id, "admin")
    assert err.value.field == "scope"
    assert await queue.list_api_keys(a.id) == []
    assert await queue.get_api_key("key_0000000000000000") is None


async def test_ping_answers(queue: Queue) -> None:
    await queue.ping()


def test_malformed_tokens_have_no_key_id() -> None:
    for token in ("", "mdk_", "Bearer x", "mdk_key_zz_" + "a" * 43, "mdk_key_" + "0" * 16):
        assert token_key_id(token) is None
