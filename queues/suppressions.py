"""Suppression lists: addresses that must not be mailed.

Each account has its own list (reason: hard bounce, complaint, unsubscribe, manual; with the
time and a free-text source), and the platform keeps one list of hard-bounced addresses that
applies to every account (stored under the account id `*`, which no real account id can be).

The store enforces them itself, so that no path around it exists: a message to a suppressed
address is stored `suppressed` at enqueue (terminal, with its `message.suppressed` event);
one already queued is settled `suppressed` when it is claimed; and the committing mark is
refused (and the message settled) when the address was suppressed while it was on its way
to the final dot. Addresses compare case-insensitively in ASCII only (what SQLite's and
PostgreSQL's "C" lower() do), so the Python and SQL sides agree.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from queues.errors import InvalidQueueInput

# The account id of the platform-wide list (account ids start with a letter or digit).
PLATFORM = "*"
ADDRESS_MAX = 320
SOURCE_MAX = 200
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class SuppressionReason(enum.StrEnum):
    """Why an address is suppressed."""

    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


class SuppressionError(InvalidQueueInput):
    """A suppression entry is unusable; `field` names the input at fault. Nothing stored."""

    code = "invalid_suppression"


@dataclass(frozen=True, slots=True)
class Suppression:
    """One suppressed address of `account` (PLATFORM for the platform-wide list)."""

    account: str
    address: str
    reason: SuppressionReason
    source: str
    created_at: float

    @property
    def platform(self) -> bool:
        return self.account == PLATFORM


def normalize_address(value: object, field: str = "address") -> str:
    """The address as stored and compared: ASCII-lowercased, checked for shape."""
    if not isinstance(value, str) or not value:
        raise SuppressionError(field=field, reason="expected an email address")
    if len(value) > ADDRESS_MAX or not value.isprintable() or any(c.isspace() for c in value):
        raise SuppressionError(
            field=field, reason=f"expected up to {ADDRESS_MAX} printable characters without spaces"
        )
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or "." not in domain.strip("."):
        raise SuppressionError(field=field, reason="expected local@domain")
    return value.translate(_ASCII_LOWER)


def make_suppression(
    account: str, address: object, reason: object, source: object, now: float, *, where: str = ""
) -> Suppression:
    """A checked entry; SuppressionError naming `where.field` otherwise."""
    prefix = f"{where}." if where else ""
    addr = normalize_address(address, f"{prefix}address")
    try:
        why = SuppressionReason(reason if isinstance(reason, str) else "")
    except ValueError:
        choices = ", ".join(r.value for r in SuppressionReason)
        raise SuppressionError(
            field=f"{prefix}reason", reason=f"expected one of {choices}"
        ) from None
    if not isinstance(source, str) or len(source) > SOURCE_MAX or not source.isprintable():
        raise SuppressionError(
            field=f"{prefix}source", reason=f"expected up to {SOURCE_MAX} printable characters"
        )
    if account == PLATFORM and why is not SuppressionReason.HARD_BOUNCE:
        raise SuppressionError(
            field=f"{prefix}reason", reason="the platform-wide list holds hard bounces only"
        )
    return Suppression(account, addr, why, source, now)
