"""The project's error convention, and the errors every queue backend raises.

Every maildispatch error derives from `MaildispatchError` (a short machine-readable `code`);
refused input is an `InvalidInput` (a `ValueError` with keyword-only `field`, `code`, `reason`
and, for a position in a batch, `index`). Each class also subclasses the built-in that says
what it is (`ValueError`, `ConnectionError`, `TimeoutError`, ...), as aiosmtplib does, so
generic handlers keep working.

The base lives here because `queues` is the one package both the store and the dispatcher
may import (the dispatcher imports the store; the store never imports the dispatcher).
`ip_pools` is independent of `queues` by contract: its two input errors follow the same shape
and are re-raised as `ConfigError` where config is read. `dispatcher.errors` re-exports the base.
"""

from __future__ import annotations


class MaildispatchError(Exception):
    """Base of every maildispatch error; `code` is a short machine-readable reason."""

    code: str = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidInput(MaildispatchError, ValueError):
    """A value is refused: `field` names it (a key path such as `messages[1].rcpt`), `reason`
    says why in words, `code` in one token; `index` is its position in a batch, if any."""

    code = "invalid"

    def __init__(
        self,
        *,
        field: str,
        reason: str,
        code: str | None = None,
        index: int | None = None,
    ) -> None:
        self.field = field
        self.reason = reason
        self.index = index
        super().__init__(self._text(), code=code)

    def _text(self) -> str:
        """The message shown to people (`str(error)`)."""
        return f"{self.field}: {self.reason}" if self.field else self.reason


# -- the queue's errors ------------------------------------------------------------------


class QueueError(MaildispatchError):
    """Base of queue errors."""

    code = "queue_error"


class InvalidQueueInput(QueueError, InvalidInput):
    """A value handed to the queue is unusable; `field` names it. Nothing was stored."""

    code = "invalid_input"


class IdempotencyConflict(QueueError, InvalidInput):
    """The same (account, idempotency_key) was enqueued before with a different payload."""

    code = "idempotency_conflict"

    def __init__(self, account: str, idempotency_key: str, existing_id: str) -> None:
        self.account = account
        self.idempotency_key = idempotency_key
        self.existing_id = existing_id
        super().__init__(
            field="idempotency_key",
            reason=(
                f"idempotency key {idempotency_key!r} of account {account!r} was used "
                f"with a different payload (message {existing_id})"
            ),
        )

    def _text(self) -> str:
        return self.reason


class LeaseLost(QueueError, RuntimeError):
    """The worker's lease was taken over; it must stop writing under its old epoch."""

    code = "lease_lost"


class QueueClosed(QueueError, RuntimeError):
    """The queue was used before `open()` or after `close()`."""

    code = "queue_closed"


class QueueUnavailable(QueueError, ConnectionError):
    """The store cannot be reached right now (refused, restarting, connection lost).

    Nothing is known to have been written by the failed call unless the method says it is
    safe to repeat; the backend reconnects by itself once the server answers again.
    `code` is "connection_lost", "server_unavailable" or "timeout" (PostgreSQL).
    """

    code = "queue_unavailable"


class QueueTimeout(QueueUnavailable, TimeoutError):
    """A call to the store did not finish in time (the server may be hung or overloaded)."""

    code = "timeout"


class SchemaMismatch(QueueError, RuntimeError):
    """The stored schema is not the one this code knows; nothing was changed.

    `code` is "schema_not_migrated" (run `maildispatch db migrate`), "schema_too_new" (this
    code is older than the database: upgrade it) or "schema_mismatch" (a SQLite file of another
    version); `found` and `known` are the versions.
    """

    code = "schema_mismatch"

    def __init__(self, message: str, *, code: str | None = None, found: int, known: int) -> None:
        super().__init__(message, code=code)
        self.found = found
        self.known = known
