"""The OpenAPI 3.1 document, built once from the route table and the msgspec schemas."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from dispatcher.api.problems import PROBLEM_TYPE, TITLES, Problem

_RATE_HEADERS = {
    name: {"schema": {"type": "integer"}, "description": text}
    for name, text in (
        ("RateLimit-Limit", "requests allowed at once for this key"),
        ("RateLimit-Remaining", "requests left now"),
        ("RateLimit-Reset", "seconds until the allowance is full again"),
    )
}
_PARAMS: dict[str, list[dict[str, Any]]] = {
    "/v1/messages": [
        {"name": n, "in": "query", "required": False, "schema": s, "description": d}
        for n, s, d in (
            ("campaign", {"type": "string", "minLength": 1, "maxLength": 200}, "one campaign"),
            ("state", {"type": "string", "enum": [
                "queued", "sending", "committing", "deferred", "delivered", "bounced",
                "failed", "ambiguous", "suppressed", "cancelled"]}, "only this state"),
            ("cursor", {"type": "string", "minLength": 1, "maxLength": 200},
             "next_cursor of the previous page"),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
            ("account", {"type": "string", "minLength": 1, "maxLength": 200},
             "the account (admin key only; an account key lists its own)"),
        )
    ],
    "/v1/accounts": [
        {"name": "cursor", "in": "query", "required": False,
         "schema": {"type": "string", "minLength": 1, "maxLength": 200}},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    ],
}  # fmt: skip


def _path_params(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for n in names
    ]


@cache
def document() -> bytes:
    """The document as JSON bytes."""
    from dispatcher.api.app import ENDPOINTS

    types: list[Any] = [Problem]
    for e in ENDPOINTS:
        if e.body is not None:
            types.append(e.body)
        if e.ok[1] is not None:
            types.append(e.ok[1])
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    refs = {t: s for t, s in zip(types, schemas, strict=True)}
    problem_ref = refs[Problem]
    paths: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        op: dict[str, Any] = {"summary": e.summary, "operationId": e.handler.__name__}
        params = _path_params(e.path) + (_PARAMS.get(e.path, []) if e.method == "GET" else [])
        if e.path == "/v1/messages" and e.method == "POST":
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    "description": "same key and payload: the original answer is replayed",
                }
            )
        if params:
            op["parameters"] = params
        if e.auth != "none":
            op["security"] = [{"bearer": []}]
            op["description"] = {
                "send": "Any API key of the account (scope send or full).",
                "full": "An API key of scope full (its own account only), or the admin key.",
                "admin": "The admin key.",
            }[e.auth]
        if e.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[e.body]}},
            }
        status, ok_type = e.ok
        ok: dict[str, Any] = {"description": "OK"}
        if ok_type is not None:
            ok["content"] = {"application/json": {"schema": refs[ok_type]}}
        elif e.path == "/metrics":
            ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
        elif e.path == "/openapi.json":
            ok["content"] = {"application/json": {"schema": {"type": "object"}}}
        if e.auth != "none":
            ok["headers"] = _RATE_HEADERS
        responses: dict[str, Any] = {str(status): ok}
        codes = set(e.errors)
        if e.auth != "none":
            codes |= {401, 429, 503}
        if e.body is not None:
            codes |= {400, 413, 415, 422}
        for code in sorted(codes):
            responses[str(code)] = {
                "description": TITLES.get(code, "Error"),
                "content": {PROBLEM_TYPE: {"schema": problem_ref}},
            }
        op["responses"] = responses
        paths.setdefault(e.path, {})[e.method.lower()] = op
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "maildispatch",
            "version": "1",
            "description": "Send mail through maildispatch. Errors are RFC 9457 problem "
            "details with a machine-readable `code` and the `field` at fault.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    return msgspec.json.encode(doc)
