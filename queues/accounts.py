"""Accounts and their API keys, as the store keeps them.

An account has an immutable `id` (messages refer to it) and a `name` that can change.
Accounts declared in config.toml are seeded into the store with their config name as id,
insert-if-absent, marked `config_seeded` and trusted; the store is authoritative afterwards
(a restart never re-seeds, renames back or un-pauses one; removing one from config never
deletes it).

API keys: the token is shown once, when the key is made; the store keeps only its SHA-256
(the secret is 256 random bits, so a fast hash is enough: nothing to brute-force). A token is
`mdk_<key id>_<secret>`; the key id finds the row, the hash is compared in constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from queues.errors import InvalidInput, QueueError


class AccountStatus(enum.StrEnum):
    """Only an operator pauses or resumes an account. Nothing of a paused account leaves:
    its waiting mail is held (due times moved HOLD_OFFSET ahead, back at resume), its new
    enqueues are accepted and held, and the committing mark of its mail in flight is
    refused (the message goes back to the queue, held); a granted mark finishes."""

    ACTIVE = "active"
    PAUSED = "paused"


# How far a paused account's due times are moved ahead (about 31,000 years): never due,
# and the original time is restored exactly at resume.
HOLD_OFFSET = 1e12


class KeyScope(enum.StrEnum):
    """`send` may only enqueue (plugins, form handlers); `full` may also read and manage keys."""

    SEND = "send"
    FULL = "full"


class AccountError(QueueError, InvalidInput):
    """An account or key operation is refused; `field` names the input at fault."""

    code = "account_error"


class AccountNotFound(AccountError, LookupError):
    """No such account (or key) in the store; `reason` is the whole sentence."""

    code = "not_found"

    def _text(self) -> str:
        return self.reason


class AccountExists(AccountError):
    """The name (or id) is taken by another account; `reason` is the whole sentence."""

    code = "account_exists"

    def _text(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class Account:
    """One sender of mail. `author_domains` and `pool` say what it may send and from where."""

    id: str
    name: str
    status: AccountStatus
    trusted: bool
    config_seeded: bool
    author_domains: tuple[str, ...]
    pool: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class AccountSeed:
    """An account declared in config.toml (its name is its id)."""

    id: str
    author_domains: tuple[str, ...]
    pool: str | None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: never the token, only its hash."""

    id: str
    account_id: str
    scope: KeyScope
    label: str
    created_at: float
    revoked_at: float | None
    secret_hash: str = field(repr=False)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just made: `token` is shown to the caller once and stored nowhere."""

    key: ApiKey
    token: str = field(repr=False)


NAME_MAX = 100
LABEL_MAX = 200
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_TOKEN = re.compile(r"mdk_(key_[0-9a-f]{16})_([A-Za-z0-9_-]{43})")


def new_account_id() -> str:
    """A fresh immutable account id."""
    return f"acc_{secrets.token_hex(10)}"


def check_account_id(value: object, field_name: str = "id") -> str:
    """Ids are short, ASCII and safe in URLs and Feedback-ID fields."""
    if not isinstance(value, str) or not _ACCOUNT_ID.fullmatch(value):
        raise AccountError(
            field=field_name,
            reason="expected 1-100 characters of A-Z a-z 0-9 . _ - "
            "(starting with a letter or digit)",
        )
    return value


def check_name(value: object, field_name: str = "name") -> str:
    """Names are what people read: 1-100 printable characters, no surrounding spaces."""
    if not isinstance(value, str) or not value.strip():
        raise AccountError(field=field_name, reason="must not be empty")
    if value != value.strip() or not value.isprintable() or len(value) > NAME_MAX:
        raise AccountError(
            field=field_name,
            reason=f"expected up to {NAME_MAX} printable characters without "
            "leading or trailing spaces",
        )
    return value


def check_label(value: object) -> str:
    if not isinstance(value, str) or not value.isprintable() or len(value) > LABEL_MAX:
        raise AccountError(field="label", reason=f"expected up to {LABEL_MAX} printable characters")
    return value


def new_token() -> tuple[str, str, str]:
    """(key id, token, hash of the token) for a new key."""
    key_id = f"key_{secrets.token_hex(8)}"
    token = f"mdk_{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, token, hash_token(token)


def hash_token(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def token_key_id(token: str) -> str | None:
    """The key id inside a well-formed token, None for anything else."""
    m = _TOKEN.fullmatch(token)
    return m.group(1) if m else None


def token_matches(token: str, key: ApiKey) -> bool:
    """Constant-time comparison of the token's hash with the stored one."""
    return hmac.compare_digest(hash_token(token), key.secret_hash)


def check_domains(value: object) -> tuple[str, ...]:
    """Author domains as given (the dispatcher checks them against its DKIM keys)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise AccountError(field="author_domains", reason="expected a list of domains")
    out: list[str] = []
    for i, d in enumerate(value):
        if not isinstance(d, str) or not d or not d.isascii() or not d.isprintable():
            raise AccountError(field=f"author_domains[{i}]", reason="expected an ASCII domain name")
        out.append(d.lower())
    return tuple(dict.fromkeys(out))


def make_key(account_id: str, scope: KeyScope | str, label: str, now: float) -> NewApiKey:
    """A new key for `account_id` (checked), with its one-time token."""
    try:
        scope = KeyScope(scope)
    except ValueError:
        raise AccountError(field="scope", reason="expected send or full") from None
    key_id, token, digest = new_token()
    key = ApiKey(
        id=key_id,
        account_id=account_id,
        scope=scope,
        label=check_label(label),
        created_at=now,
        revoked_at=None,
        secret_hash=digest,
    )
    return NewApiKey(key=key, token=token)
