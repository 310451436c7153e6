"""Errors of the PostgreSQL backend: the server is unreachable, or the schema does not fit."""

from __future__ import annotations

from queues.protocol import QueueError


class QueueUnavailable(QueueError, ConnectionError):
    """PostgreSQL cannot be reached right now (refused, restarting, connection lost).

    Nothing is known to have been written by the failed call unless the method says it is
    safe to repeat. The pool reconnects by itself once the server answers again.
    `code` is "connection_lost", "server_unavailable" or "timeout".
    """

    code = "queue_unavailable"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class QueueTimeout(QueueUnavailable, TimeoutError):
    """A call to PostgreSQL did not finish in time (the server may be hung or overloaded)."""

    def __init__(self, message: str) -> None:
        super().__init__("timeout", message)


class SchemaMismatch(QueueError, RuntimeError):
    """The database schema is not the one this code knows.

    `code` is "schema_not_migrated" (run `maildispatch db migrate`) or "schema_too_new"
    (this code is older than the database: upgrade it, never run it against that schema).
    """

    def __init__(self, code: str, found: int, known: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.found = found
        self.known = known
