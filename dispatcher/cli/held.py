"""`maildispatch held`: the mail held as `ambiguous`, listed, released or resolved.

    maildispatch held [--account A] [--campaign C] [--stream S] [--older-than 1h] [--json]
    maildispatch held release  (same filters, or --all)   queue again: a deliberate resend
    maildispatch held resolve --as delivered|failed  (same filters, or --all)   no send

A held message's dot was written and no reply came (or its worker died after the committing
mark): it may have been delivered. Releasing sends it again (the receiver may get it twice;
the message's history counts the resend), resolving settles it without sending.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from dispatcher.config import Config, ConfigError, parse_duration
from dispatcher.engine.runtime import open_store
from queues.protocol import HeldFilter, HeldMessage, MessageState, Queue


def add_parser(sub: Any, func: Any) -> None:
    """Register `held` and its subcommands on the top-level subparsers."""
    p = sub.add_parser("held", help="held (ambiguous) mail: list, release, resolve")
    _filters(p, None)
    p.add_argument("--limit", type=int, default=1000, help="most messages listed")
    p.set_defaults(func=func, held_cmd="list")
    hsub = p.add_subparsers(dest="held_cmd")
    rel = hsub.add_parser("release", help="queue them again (counted as a deliberate resend)")
    _filters(rel, argparse.SUPPRESS)
    rel.add_argument("--all", action="store_true", help="every held message (no filter)")
    res = hsub.add_parser("resolve", help="settle them without sending")
    _filters(res, argparse.SUPPRESS)
    res.add_argument("--as", dest="as_state", required=True, choices=("delivered", "failed"))
    res.add_argument("--all", action="store_true", help="every held message (no filter)")


def _filters(p: argparse.ArgumentParser, default: Any) -> None:
    # Subcommands suppress their defaults, so filters given before the verb are kept.
    p.add_argument("--config", default=default)
    p.add_argument("--account", default=default, help="account id or name")
    p.add_argument("--campaign", default=default)
    p.add_argument("--stream", default=default, choices=("transactional", "broadcast"))
    p.add_argument("--older-than", default=default, help="held at least this long (1h, 2d)")
    p.add_argument("--id", action="append", default=default, help="one message (repeatable)")
    p.add_argument("--json", action="store_true", default=default)


async def run(args: argparse.Namespace, config: Config) -> int:
    """One `held` command; JSON with --json, else short lines. Exit 2 on a usage error."""
    now = time.time()
    queue = await open_store(config)
    try:
        which = await _filter(args, queue, now)
        cmd = args.held_cmd
        if cmd in ("release", "resolve") and which == HeldFilter() and not args.all:
            print(f"held {cmd}: give a filter (--account, --campaign, ...) or --all")
            return 2
        if cmd == "release":
            n = await queue.release_held(which, now)
            _say(args, {"released": n}, f"released {n} held messages (each counted as a resend)")
        elif cmd == "resolve":
            state = MessageState(args.as_state)
            n = await queue.resolve_held(which, state, now)
            _say(args, {"resolved": n, "as": state.value}, f"resolved {n} as {state.value}")
        else:
            held = await queue.held(which, limit=args.limit)
            total = await queue.held_count()
            if args.json:
                print(json.dumps({"held": total, "messages": [held_dict(h) for h in held]}))
            else:
                for h in held:
                    print(held_line(h, now))
                print(f"{len(held)} listed, {total} held in all")
        return 0
    finally:
        await queue.close()


async def _filter(args: argparse.Namespace, queue: Queue, now: float) -> HeldFilter:
    account = getattr(args, "account", None)
    if account:
        found = await queue.find_account(account)  # ids are stored; a name is accepted too
        account = found.id if found is not None else account
    older = getattr(args, "older_than", None)
    held_before = None
    if older:
        try:
            held_before = now - parse_duration(older, "--older-than")
        except ConfigError as e:
            raise SystemExit(f"held: {e}") from None
    ids = getattr(args, "id", None)
    return HeldFilter(
        account=account or None,
        campaign=getattr(args, "campaign", None),
        stream=getattr(args, "stream", None),
        held_before=held_before,
        ids=tuple(ids) if ids else None,
    )


def _say(args: argparse.Namespace, data: dict[str, object], text: str) -> None:
    print(json.dumps(data) if getattr(args, "json", False) else text)


def held_dict(h: HeldMessage) -> dict[str, object]:
    return {
        "id": h.id,
        "account": h.account,
        "campaign": h.campaign,
        "stream": h.stream,
        "rcpt": h.rcpt,
        "attempts": h.attempts,
        "reason": h.reason,
        "reply_code": h.reply_code,
        "reply_text": h.reply_text,
        "held_at": h.held_at,
        "source_ip": h.source_ip,
        "mx_host": h.mx_host,
        "resends": h.resends,
    }


def held_line(h: HeldMessage, now: float) -> str:
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h.held_at))
    age = _age(now - h.held_at)
    why = h.reply_text if h.reply_code is None else f"{h.reply_code} {h.reply_text}"
    # Stored reply text is already cleaned of control characters by the SMTP layer.
    return (
        f"{h.id} {h.account} {h.campaign or '-'} {h.rcpt} held {at} ({age} ago) "
        f"{h.reason}: {why or 'no reply'}"
    )


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
