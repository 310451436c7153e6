"""RFC 9457 problem details: every error of the API is `application/problem+json` with a
machine-readable `code` and, when one input is at fault, the `field` (a key path).

Errors raised below the API (intake, the store) carry `code` and `field` (or `key_path`);
`from_exception` maps them to a status without knowing every type.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from starlette.responses import Response

from dispatcher.errors import MaildispatchError
from dispatcher.message.intake import MessageError
from queues.accounts import AccountError, AccountExists, AccountNotFound
from queues.errors import IdempotencyConflict, InvalidQueueInput

PROBLEM_TYPE = "application/problem+json"
_BASE = "https://maildispatch.example/problems/"  # stable identifiers, not fetched

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


class Problem(msgspec.Struct, omit_defaults=True):
    """The body of every error response."""

    type: str
    title: str
    status: int
    code: str
    detail: str = ""
    field: str | None = None
    # Per-item errors of a batch: index of the item; a batch refused whole lists them.
    index: int | None = None
    errors: list[Problem] | None = None


class ApiProblem(MaildispatchError):
    """Raised by handlers; rendered as problem+json by the app (an HTTP answer, so no
    built-in kind)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: list[Problem] | None = None,
    ) -> None:
        super().__init__(detail, code=code)
        self.errors = errors
        self.status = status
        self.detail = detail
        self.field = field
        self.headers = dict(headers or {})

    def body(self, index: int | None = None) -> Problem:
        return Problem(
            type=_BASE + self.code,
            title=TITLES.get(self.status, "Error"),
            status=self.status,
            code=self.code,
            detail=_printable(self.detail),
            field=None if self.field is None else _printable(self.field),
            index=index,
            errors=self.errors,
        )

    def response(self) -> Response:
        return Response(
            msgspec.json.encode(self.body()),
            status_code=self.status,
            media_type=PROBLEM_TYPE,
            headers=self.headers,
        )


def _printable(text: str) -> str:
    """Echoed input stays one printable, bounded line (it may be hostile)."""
    out = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return out if len(out) <= 500 else out[:497] + "..."


def from_exception(exc: Exception) -> ApiProblem | None:
    """The problem for an expected error, None for a bug (a 500)."""
    if isinstance(exc, ApiProblem):
        return exc
    if isinstance(exc, MessageError):
        # Unreadable documents are 400; a readable one with a bad field is 422.
        status = 400 if exc.field == "payload" or exc.code == "duplicate" else 422
        return ApiProblem(status, exc.code, str(exc), field=exc.field)
    if isinstance(exc, IdempotencyConflict):
        return ApiProblem(
            422,
            "idempotency_conflict",
            "this Idempotency-Key was used with a different payload",
            field="idempotency_key",
        )
    if isinstance(exc, AccountNotFound):
        return ApiProblem(404, "not_found", "no such resource")
    if isinstance(exc, AccountExists):
        return ApiProblem(409, exc.code, str(exc), field=exc.field)
    if isinstance(exc, AccountError | InvalidQueueInput):
        return ApiProblem(422, exc.code, str(exc), field=exc.field)
    if isinstance(exc, ConnectionError | TimeoutError):
        return ApiProblem(
            503,
            "store_unavailable",
            "the store did not answer; retry",
            headers={"Retry-After": "1"},
        )
    return None
