"""`maildispatch accounts ...`: operators manage the accounts and API keys in the store."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dispatcher.api.accounts import check_profile
from dispatcher.config import Config
from dispatcher.engine.runtime import open_store
from queues.accounts import Account, AccountNotFound, AccountStatus, ApiKey
from queues.protocol import Queue


def account_dict(a: Account) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "status": a.status.value,
        "trusted": a.trusted,
        "config_seeded": a.config_seeded,
        "author_domains": list(a.author_domains),
        "pool": a.pool,
        "created_at": a.created_at,
    }


def key_dict(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "scope": k.scope.value,
        "label": k.label,
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
    }


async def _resolve(queue: Queue, ref: str) -> Account:
    found = await queue.find_account(ref)
    if found is None:
        raise AccountNotFound(field="account", reason=f"no account with id or name {ref!r}")
    return found


async def run(args: argparse.Namespace, config: Config) -> int:
    """One `accounts` subcommand; prints JSON with --json, else short lines."""
    queue = await open_store(config)
    try:
        return await _dispatch(args, config, queue)
    finally:
        await queue.close()


async def _dispatch(args: argparse.Namespace, config: Config, queue: Queue) -> int:
    cmd = args.accounts_cmd
    out: Any
    if cmd == "create":
        domains, pool = check_profile(config, args.author_domain or [], args.pool)
        a = await queue.create_account(
            args.name, author_domains=domains, pool=pool, trusted=args.trusted
        )
        out = account_dict(a)
        text = f"{a.id} {a.name}"
    elif cmd == "list":
        accounts: list[Account] = []
        after: str | None = None
        while page := await queue.list_accounts(after=after, limit=1000):
            accounts += page
            after = page[-1].id
        out = [account_dict(a) for a in accounts]
        text = "\n".join(
            "\t".join([a.id, a.name, a.status.value] + (["config"] if a.config_seeded else []))
            for a in accounts
        )
    elif cmd == "show":
        a = await _resolve(queue, args.account)
        keys = await queue.list_api_keys(a.id)
        out = {**account_dict(a), "keys": [key_dict(k) for k in keys]}
        text = json.dumps(out, indent=2)
    elif cmd == "rename":
        a = await queue.rename_account((await _resolve(queue, args.account)).id, args.name)
        out = account_dict(a)
        text = f"{a.id} {a.name}"
    elif cmd in ("pause", "resume"):
        status = AccountStatus.PAUSED if cmd == "pause" else AccountStatus.ACTIVE
        a = await queue.set_account_status((await _resolve(queue, args.account)).id, status)
        out = account_dict(a)
        text = f"{a.id} {a.status.value}"
    elif cmd == "purge":
        a = await _resolve(queue, args.account)
        n = await queue.cancel(a.id, args.campaign)
        out = {"id": a.id, "campaign": args.campaign, "cancelled": n}
        text = f"{a.id}: {n} waiting messages cancelled"
    elif cmd == "key":
        a = await _resolve(queue, args.account)
        if args.key_cmd == "create":
            made = await queue.create_api_key(a.id, args.scope, args.label)
            out = {**key_dict(made.key), "account_id": a.id, "token": made.token}
            text = made.token
            print(
                f"key {made.key.id} ({made.key.scope.value}) for {a.id}; the token is shown "
                "only now:",
                file=sys.stderr,
            )
        else:
            if not await queue.revoke_api_key(a.id, args.key_id):
                raise AccountNotFound(
                    field="key_id", reason=f"{a.id} has no active key {args.key_id!r}"
                )
            out = {"id": args.key_id, "revoked": True}
            text = f"revoked {args.key_id}"
    else:  # pragma: no cover - argparse refuses others
        raise AssertionError(cmd)
    print(json.dumps(out, indent=2) if args.json else text)
    return 0


def add_parser(sub: Any, func: Any) -> None:
    """Register `accounts` and its subcommands on the top-level subparsers."""
    p = sub.add_parser("accounts", help="accounts and API keys in the store")
    asub = p.add_subparsers(dest="accounts_cmd", required=True)

    def common(q: argparse.ArgumentParser) -> argparse.ArgumentParser:
        q.add_argument("--config")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=func)
        return q

    c = common(asub.add_parser("create", help="a new account (a fresh immutable id)"))
    c.add_argument("name")
    c.add_argument("--author-domain", action="append", help="repeatable; needs a DKIM key")
    c.add_argument("--pool")
    c.add_argument("--trusted", action="store_true")
    common(asub.add_parser("list", help="every account"))
    s = common(asub.add_parser("show", help="one account (by id or name) and its keys"))
    s.add_argument("account")
    r = common(asub.add_parser("rename", help="change the name; the id stays"))
    r.add_argument("account")
    r.add_argument("name")
    for verb in ("pause", "resume"):
        v = common(asub.add_parser(verb, help=f"{verb} sending for an account"))
        v.add_argument("account")
    pg = common(
        asub.add_parser(
            "purge",
            help="cancel every waiting message of an account (in batches, with events)",
        )
    )
    pg.add_argument("account")
    pg.add_argument("--campaign", help="only this campaign's messages")
    k = asub.add_parser("key", help="API keys of an account")
    ksub = k.add_subparsers(dest="key_cmd", required=True)
    kc = common(ksub.add_parser("create", help="a new key; its token is printed once"))
    kc.add_argument("account")
    kc.add_argument("--scope", choices=("send", "full"), default="send")
    kc.add_argument("--label", default="")
    kr = common(ksub.add_parser("revoke", help="revoke one key"))
    kr.add_argument("account")
    kr.add_argument("key_id")
