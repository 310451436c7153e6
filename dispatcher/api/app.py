"""The ASGI application: routes, handlers and the services they share.

Starlette for routing and msgspec for the documents (measured against FastAPI on the
single-POST path: docs/api.md). Message payloads go through the same intake as the CLI
(`dispatcher.message.intake`): parse_payload (duplicate keys, NaN, UTF-8) and
MessageFactory.build (every field, rendering); this module adds only what HTTP adds: the
account from the key, the Idempotency-Key header, the request cap, scopes, rate limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dispatcher.api import schemas as S
from dispatcher.api.accounts import check_profile, sender_profile
from dispatcher.api.auth import Authenticator, Principal
from dispatcher.api.committer import EnqueueCommitter
from dispatcher.api.metrics import RequestMetrics
from dispatcher.api.problems import ApiProblem, from_exception
from dispatcher.api.ratelimit import RateLimiter
from dispatcher.config import Config
from dispatcher.events.secrets import SecretBox, new_secret
from dispatcher.events.webhooks import (
    EndpointDoc,
    WebhookInputError,
    check_types,
    check_url,
    doc_of,
    encode,
    new_webhook_id,
    state_of,
)
from dispatcher.message.intake import MessageError, MessageFactory, parse_payload
from dispatcher.message.verp import Verp
from queues.accounts import Account, AccountStatus, ApiKey, KeyScope
from queues.errors import IdempotencyConflict, QueueError
from queues.protocol import AttemptRecord, MessageState, MessageView, NewMessage, Queue
from queues.suppressions import PLATFORM, Suppression, make_suppression, normalize_address
from queues.webhooks import WebhookRecord

log = logging.getLogger(__name__)
JSON = "application/json"
_encoder = msgspec.json.Encoder()


def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type=JSON, headers=headers)


# -- services ------------------------------------------------------------------------------


@dataclass
class Services:
    """What the handlers share; built at startup, closed at shutdown."""

    config: Config
    queue: Queue
    factory: MessageFactory
    auth: Authenticator
    limiter: RateLimiter
    committer: EnqueueCommitter
    metrics: RequestMetrics
    probes: dict[str, Callable[[], Awaitable[None]]]
    in_flight: set[tuple[str, str]]

    @classmethod
    async def open(cls, config: Config, queue: Queue | None = None) -> Services:
        from dispatcher.engine.runtime import open_store

        verp = Verp.from_file(
            config.verp.secret_file,
            config.verp.prefix,
            allow_insecure=config.security.allow_insecure_permissions,
        )
        q = queue or await open_store(config)
        committer = EnqueueCommitter(q)
        committer.start()
        admin = _admin_key(config)
        return cls(
            config=config,
            queue=q,
            factory=MessageFactory.from_config(config, verp),
            auth=Authenticator(q, admin, ttl=config.api.key_cache_ttl),
            limiter=RateLimiter(config.api.rate_limit, config.api.rate_burst),
            committer=committer,
            metrics=RequestMetrics(),
            probes={"store": q.ping},
            in_flight=set(),
        )

    async def close(self, *, close_queue: bool = True) -> None:
        await self.committer.stop()
        if close_queue:
            await self.queue.close()


def _admin_key(config: Config) -> str:
    import os

    return os.environ.get("MAILDISPATCH_ADMIN_KEY", "") or config.api.admin_key


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def authorize(request: Request, scope: KeyScope) -> Principal:
    """Authenticate, rate-limit (per key) and check the scope; headers for the response."""
    svc = services(request)
    principal = await svc.auth.principal(request.headers.get("authorization"))
    verdict = svc.limiter.take(principal.rate_key)
    request.state.rate_headers = verdict.headers()
    if not verdict.allowed:
        raise ApiProblem(
            429, "rate_limited", "too many requests for this API key", headers=verdict.headers()
        )
    principal.require(scope)
    return principal


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past `[api] max_request_bytes`."""
    cap = services(request).config.api.max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise ApiProblem(413, "too_large", f"the request body exceeds {cap} bytes", field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ApiProblem(
                413, "too_large", f"the request body exceeds {cap} bytes", field="body"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(raw: bytes, typ: type[Any]) -> Any:
    """An admin document (not a message payload): strict, errors naming the field."""
    try:
        return msgspec.json.decode(raw or b"{}", type=typ)
    except msgspec.ValidationError as e:
        path = str(e).rsplit("at `$.", 1)
        field = path[1].rstrip("`") if len(path) == 2 else "payload"
        raise ApiProblem(422, "invalid", str(e), field=field) from None
    except msgspec.DecodeError as e:
        raise ApiProblem(400, "invalid", f"not valid JSON: {e}", field="payload") from None


# -- messages ------------------------------------------------------------------------------


def _prepare(
    svc: Services,
    principal: Principal,
    payload: dict[str, object],
    header_key: str | None,
    now: float,
) -> NewMessage:
    """The account from the key, the idempotency key from header or field, then intake."""
    account = principal.account
    assert account is not None
    named = payload.get("account")
    if named is not None and named not in (account.id, account.name):
        raise ApiProblem(
            403, "account_mismatch", "the payload names another account", field="account"
        )
    # A paused account's mail is accepted and held by the store until it is resumed.
    field_key = payload.get("idempotency_key")
    if header_key is not None:
        if field_key is not None and field_key != header_key:
            raise ApiProblem(
                422,
                "idempotency_key_mismatch",
                "the Idempotency-Key header and the idempotency_key field differ",
                field="idempotency_key",
            )
        payload["idempotency_key"] = header_key
    elif field_key is None:
        # No key given: the request is not deduplicated (a fresh key of our own).
        payload["idempotency_key"] = f"auto-{uuid.uuid4().hex}"
    payload["account"] = account.id
    return svc.factory.build(payload, now=now, account=sender_profile(account, svc.config))


def _accepted(m: NewMessage | MessageView, message_id: str, payload: Mapping[str, object]) -> Any:
    meta = payload.get("metadata")
    return S.Accepted(
        id=message_id,
        account=m.account,
        idempotency_key=m.idempotency_key,
        status="accepted",
        metadata=meta if isinstance(meta, dict) and meta else None,
    )


async def send_one(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.SEND)
    if principal.admin:
        raise ApiProblem(403, "account_key_required", "send with an account's API key")
    raw = await read_body(request)
    payload = parse_payload(raw)
    header_key = request.headers.get("idempotency-key")
    message = _prepare(svc, principal, payload, header_key, time.time())
    slot = (message.account, message.idempotency_key)
    if slot in svc.in_flight:
        raise ApiProblem(
            409,
            "idempotency_in_flight",
            "a request with this Idempotency-Key is still being processed; retry",
            field="idempotency_key",
            headers={"Retry-After": "1"},
        )
    if svc.committer.busy:
        raise ApiProblem(
            503,
            "busy",
            "too many messages waiting to be stored; retry",
            headers={"Retry-After": "1"},
        )
    svc.in_flight.add(slot)
    try:
        result = await svc.committer.submit(message)
    finally:
        svc.in_flight.discard(slot)
    if isinstance(result, IdempotencyConflict):
        raise from_exception(result)  # type: ignore[misc]
    headers = dict(request.state.rate_headers)
    if not result.created:
        headers["Idempotent-Replayed"] = "true"
    return _json(_accepted(message, result.id, payload), 202, headers)


async def send_batch(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.SEND)
    if principal.admin:
        raise ApiProblem(403, "account_key_required", "send with an account's API key")
    raw = await read_body(request)
    doc = parse_payload(raw)
    unknown = sorted(set(doc) - {"messages"})
    if unknown:
        raise ApiProblem(422, "unknown_field", "unknown field", field=unknown[0])
    items = doc.get("messages")
    if not isinstance(items, list) or not items:
        raise ApiProblem(422, "invalid", "expected a non-empty list", field="messages")
    cap = svc.config.api.max_batch
    if len(items) > cap:
        raise ApiProblem(422, "too_large", f"more than {cap} messages", field="messages")
    now = time.time()
    # Rendering is CPU work: off the loop for big batches, so other requests keep flowing.
    built = await _build_all(svc, principal, items, now)
    messages = [m for m in built if isinstance(m, NewMessage)]
    stored = iter(await svc.queue.enqueue_each(messages) if messages else [])
    results: list[S.ItemResult] = []
    counts = {"accepted": 0, "duplicate": 0, "failed": 0}
    for i, item in enumerate(built):
        if isinstance(item, ApiProblem):
            results.append(S.ItemResult(index=i, status="failed", error=item.body(i)))
            counts["failed"] += 1
            continue
        r = next(stored)
        if isinstance(r, IdempotencyConflict):
            problem = from_exception(r)
            assert problem is not None
            results.append(S.ItemResult(index=i, status="failed", error=problem.body(i)))
            counts["failed"] += 1
        else:
            if r.created:
                results.append(S.ItemResult(index=i, status="accepted", id=r.id))
                counts["accepted"] += 1
            else:
                results.append(S.ItemResult(index=i, status="duplicate", id=r.id))
                counts["duplicate"] += 1
    if counts["failed"] == len(built):
        errors = [r.error for r in results if r.error is not None]
        raise ApiProblem(
            422,
            "batch_rejected",
            "no message of the batch is valid; nothing was stored",
            field=errors[0].field,
            errors=errors,
        )
    out = S.BatchOut(counts["accepted"], counts["duplicate"], counts["failed"], results)
    return _json(out, 200, request.state.rate_headers)


async def _build_all(
    svc: Services, principal: Principal, items: list[object], now: float
) -> list[NewMessage | ApiProblem]:
    def build(part: list[tuple[int, object]]) -> list[NewMessage | ApiProblem]:
        out: list[NewMessage | ApiProblem] = []
        for i, item in part:
            try:
                if not isinstance(item, dict):
                    raise ApiProblem(
                        422, "invalid", "expected a message object", field=f"messages[{i}]"
                    )
                out.append(_prepare(svc, principal, item, None, now))
            except (ApiProblem, MessageError) as e:
                problem = from_exception(e)
                assert problem is not None
                if problem.field and not problem.field.startswith("messages["):
                    problem.field = f"messages[{i}].{problem.field}"
                out.append(problem)
        return out

    indexed = list(enumerate(items))
    if len(indexed) <= 50:
        return build(indexed)
    out: list[NewMessage | ApiProblem] = []
    for start in range(0, len(indexed), 500):
        out += await asyncio.to_thread(build, indexed[start : start + 500])
    return out


def _reply(code: int | None, text: str | None) -> S.Reply | None:
    return None if code is None and text is None else S.Reply(code=code, text=text)


def _message_out(v: MessageView, attempts: list[AttemptRecord] | None) -> S.MessageOut:
    return S.MessageOut(
        id=v.id,
        account=v.account,
        idempotency_key=v.idempotency_key,
        state=v.state.value,
        rcpt=v.rcpt,
        stream=v.stream,
        campaign=v.campaign,
        metadata=json.loads(v.metadata) if v.metadata else None,
        attempt_count=v.attempts,
        enqueued_at=S.when(v.enqueued_at),  # type: ignore[arg-type]
        updated_at=S.when(v.updated_at),  # type: ignore[arg-type]
        due_at=S.when(v.due_at),
        expires_at=S.when(v.expires_at),
        last_reply=_reply(v.last_reply_code, v.last_reply_text),
        source_ip=v.source_ip,
        platform_domain=v.platform_domain,
        attempts=None
        if attempts is None
        else [
            S.AttemptOut(
                at=S.when(a.at),  # type: ignore[arg-type]
                outcome=a.state.value,
                source_ip=a.source_ip,
                platform_domain=a.platform_domain,
                mx_host=a.mx_host,
                tls=a.tls,
                reply=S.Reply(code=a.reply_code, text=a.reply_text),
                category=a.category,
            )
            for a in attempts
        ],
    )


def _not_found() -> ApiProblem:
    return ApiProblem(404, "not_found", "no such resource")


async def get_message(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    message_id = request.path_params["message_id"]
    views = await svc.queue.describe([message_id])
    if not views or not principal.owns(views[0].account):
        raise _not_found()
    attempts = (await svc.queue.attempts([message_id])).get(message_id, [])
    return _json(_message_out(views[0], attempts), 200, request.state.rate_headers)


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise ApiProblem(422, "invalid", "expected an integer from 1 to 1000", field="limit")
    return int(raw)


def _text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and (not value or len(value) > 200 or not value.isprintable()):
        raise ApiProblem(422, "invalid", "expected 1 to 200 printable characters", field=name)
    return value


async def list_messages(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    account_id = _text_param(request, "account")
    if principal.account is not None:
        if account_id is not None and account_id != principal.account.id:
            raise _not_found()
        account_id = principal.account.id
    elif account_id is None:
        raise ApiProblem(
            422, "required", "the admin key lists one account at a time", field="account"
        )
    state_raw = request.query_params.get("state")
    try:
        state = None if state_raw is None else MessageState(state_raw)
    except ValueError:
        choices = ", ".join(s.value for s in MessageState)
        raise ApiProblem(422, "invalid", f"expected one of {choices}", field="state") from None
    limit = _limit(request)
    views = await svc.queue.list_messages(
        account_id,
        campaign=_text_param(request, "campaign"),
        state=state,
        before=_text_param(request, "cursor"),
        limit=limit,
    )
    page = S.MessagePage(
        data=[_message_out(v, None) for v in views],
        next_cursor=views[-1].id if len(views) == limit else None,
    )
    return _json(page, 200, request.state.rate_headers)


# -- accounts and keys ---------------------------------------------------------------------


def _account_out(a: Account) -> S.AccountOut:
    return S.AccountOut(
        id=a.id,
        name=a.name,
        status=a.status.value,
        trusted=a.trusted,
        config_seeded=a.config_seeded,
        author_domains=list(a.author_domains),
        pool=a.pool,
        created_at=S.when(a.created_at),  # type: ignore[arg-type]
        updated_at=S.when(a.updated_at),  # type: ignore[arg-type]
    )


def _key_out(k: ApiKey) -> S.KeyOut:
    return S.KeyOut(
        id=k.id,
        account_id=k.account_id,
        scope=k.scope.value,
        label=k.label,
        created_at=S.when(k.created_at),  # type: ignore[arg-type]
        revoked_at=S.when(k.revoked_at),
    )


async def _own_account(request: Request, principal: Principal) -> Account:
    """The account of the path, 404 unless the caller may see it."""
    account_id = request.path_params["account_id"]
    if not principal.owns(account_id):
        raise _not_found()
    account = await services(request).queue.get_account(account_id)
    if account is None:
        raise _not_found()
    return account


async def create_account(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    principal.require_admin()
    doc: S.AccountIn = _decode(await read_body(request), S.AccountIn)
    domains, pool = check_profile(svc.config, doc.author_domains, doc.pool)
    account = await svc.queue.create_account(
        doc.name, author_domains=domains, pool=pool, trusted=doc.trusted
    )
    return _json(_account_out(account), 201, request.state.rate_headers)


async def list_accounts(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    principal.require_admin()
    limit = _limit(request)
    accounts = await svc.queue.list_accounts(after=_text_param(request, "cursor"), limit=limit)
    page = S.AccountPage(
        data=[_account_out(a) for a in accounts],
        next_cursor=accounts[-1].id if len(accounts) == limit else None,
    )
    return _json(page, 200, request.state.rate_headers)


async def get_account(request: Request) -> Response:
    principal = await authorize(request, KeyScope.FULL)
    account = await _own_account(request, principal)
    return _json(_account_out(account), 200, request.state.rate_headers)


async def patch_account(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    account = await _own_account(request, principal)
    doc: S.AccountPatch = _decode(await read_body(request), S.AccountPatch)
    if doc.status is not None:
        principal.require_admin()  # an account never un-pauses itself
        account = await svc.queue.set_account_status(account.id, AccountStatus(doc.status))
    if doc.name is not None:
        account = await svc.queue.rename_account(account.id, doc.name)
    svc.auth.forget()
    return _json(_account_out(account), 200, request.state.rate_headers)


async def create_key(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    account = await _own_account(request, principal)
    doc: S.KeyIn = _decode(await read_body(request), S.KeyIn)
    made = await svc.queue.create_api_key(account.id, doc.scope, doc.label)
    k = made.key
    out = S.NewKeyOut(
        id=k.id,
        account_id=k.account_id,
        scope=k.scope.value,
        label=k.label,
        created_at=S.when(k.created_at),  # type: ignore[arg-type]
        token=made.token,
    )
    headers = {**request.state.rate_headers, "Cache-Control": "no-store"}
    return _json(out, 201, headers)


async def list_keys(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    account = await _own_account(request, principal)
    keys = await svc.queue.list_api_keys(account.id)
    return _json(S.KeyList(data=[_key_out(k) for k in keys]), 200, request.state.rate_headers)


async def revoke_key(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    account = await _own_account(request, principal)
    key_id = request.path_params["key_id"]
    if not await svc.queue.revoke_api_key(account.id, key_id):
        raise _not_found()
    svc.auth.forget(key_id)
    return Response(status_code=204, headers=request.state.rate_headers)


# -- suppression lists ---------------------------------------------------------------------

IMPORT_MAX = 10_000


async def _suppression_account(request: Request, principal: Principal) -> str:
    """Whose list: the key's account; for the admin key `?account=` or, without it, the
    platform-wide list. Another account's is a 404."""
    account_id = _text_param(request, "account")
    if principal.account is not None:
        if account_id is not None and account_id != principal.account.id:
            raise _not_found()
        return principal.account.id
    if account_id is None:
        return PLATFORM
    if await services(request).queue.get_account(account_id) is None:
        raise _not_found()
    return account_id


def _suppression_out(e: Suppression) -> S.SuppressionOut:
    return S.SuppressionOut(
        address=e.address,
        reason=e.reason.value,
        source=e.source,
        scope="platform" if e.platform else "account",
        created_at=S.when(e.created_at),  # type: ignore[arg-type]
    )


async def get_suppression(request: Request) -> Response:
    principal = await authorize(request, KeyScope.FULL)
    account = await _suppression_account(request, principal)
    address = normalize_address(request.path_params["address"])
    found = await services(request).queue.get_suppression(account, address)
    if found is None:
        raise _not_found()
    return _json(_suppression_out(found), 200, request.state.rate_headers)


async def put_suppression(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    account = await _suppression_account(request, principal)
    doc: S.SuppressionIn = _decode(await read_body(request), S.SuppressionIn)
    entry = make_suppression(
        account, request.path_params["address"], doc.reason, doc.source, time.time()
    )
    await svc.queue.put_suppressions([entry])
    return _json(_suppression_out(entry), 200, request.state.rate_headers)


async def delete_suppression(request: Request) -> Response:
    principal = await authorize(request, KeyScope.FULL)
    account = await _suppression_account(request, principal)
    address = normalize_address(request.path_params["address"])
    if not await services(request).queue.delete_suppression(account, address):
        raise _not_found()
    return Response(status_code=204, headers=request.state.rate_headers)


async def list_suppressions(request: Request) -> Response:
    """The export: the list in address order, a page at a time."""
    principal = await authorize(request, KeyScope.FULL)
    account = await _suppression_account(request, principal)
    raw = request.query_params.get("limit", "1000")
    if not raw.isdigit() or not 1 <= int(raw) <= IMPORT_MAX:
        raise ApiProblem(
            422, "invalid", f"expected an integer from 1 to {IMPORT_MAX}", field="limit"
        )
    limit = int(raw)
    entries = await services(request).queue.list_suppressions(
        account, after=request.query_params.get("cursor"), limit=limit
    )
    page = S.SuppressionPage(
        data=[_suppression_out(e) for e in entries],
        next_cursor=entries[-1].address if len(entries) == limit else None,
    )
    return _json(page, 200, request.state.rate_headers)


async def import_suppressions(request: Request) -> Response:
    """Bulk import: every entry checked first, then all stored in one transaction."""
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    account = await _suppression_account(request, principal)
    doc: S.SuppressionImport = _decode(await read_body(request), S.SuppressionImport)
    if len(doc.suppressions) > IMPORT_MAX:
        raise ApiProblem(
            422, "too_many", f"at most {IMPORT_MAX} entries per import", field="suppressions"
        )
    now = time.time()
    entries = [
        make_suppression(account, item.address, item.reason, item.source, now,
                         where=f"suppressions[{i}]")
        for i, item in enumerate(doc.suppressions)
    ]  # fmt: skip
    n = await svc.queue.put_suppressions(entries)
    return _json(S.Imported(imported=n), 200, request.state.rate_headers)


async def cancel_campaign(request: Request) -> Response:
    """Every waiting message of the campaign becomes cancelled; mail of it already on its
    way is refused at its committing mark."""
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    account_id = _text_param(request, "account")
    if principal.account is not None:
        if account_id is not None and account_id != principal.account.id:
            raise _not_found()
        account_id = principal.account.id
    elif account_id is None:
        raise ApiProblem(
            422, "required", "the admin key cancels one account's campaign", field="account"
        )
    elif await svc.queue.get_account(account_id) is None:
        raise _not_found()
    campaign = request.path_params["campaign"]
    if not campaign or len(campaign) > 200 or not campaign.isprintable():
        raise ApiProblem(422, "invalid", "expected 1 to 200 printable characters", field="campaign")
    n = await svc.queue.cancel(account_id, campaign)
    return _json(S.Cancelled(campaign=campaign, cancelled=n), 200, request.state.rate_headers)


# -- webhooks ------------------------------------------------------------------------------


def _webhook_out(r: WebhookRecord, secret: str | None = None) -> S.WebhookOut:
    doc, state = doc_of(r), state_of(r)
    return S.WebhookOut(
        id=r.id,
        account_id=r.account,
        url=r.url,
        event_types=doc.event_types,
        batch_size=doc.batch_size,
        created_at=S.when(r.created_at),  # type: ignore[arg-type]
        position=state.position if state.position >= 0 else doc.start,
        pending_batch=state.batch.id if state.batch else None,
        attempts=state.attempts,
        failing=state.failing,
        disabled=state.disabled,
        last_status=state.last_status,
        last_error=state.last_error,
        next_attempt_at=S.when(state.next_at) if state.batch and state.next_at else None,
        delivered_batches=state.delivered_batches,
        delivered_events=state.delivered_events,
        secret=secret,
    )


async def _own_webhook(request: Request, principal: Principal) -> WebhookRecord:
    found = await services(request).queue.list_webhooks(
        webhook_id=request.path_params["webhook_id"]
    )
    if not found or not principal.owns(found[0].account):
        raise _not_found()
    return found[0]


async def create_webhook(request: Request) -> Response:
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    doc: S.WebhookIn = _decode(await read_body(request), S.WebhookIn)
    if principal.account is not None:
        if doc.account not in (None, principal.account.id):
            raise _not_found()
        account_id = principal.account.id
    else:
        if not doc.account or await svc.queue.get_account(doc.account) is None:
            raise ApiProblem(422, "invalid", "the admin key must name an account", field="account")
        account_id = doc.account
    cfg = svc.config.webhooks
    box = SecretBox(cfg.encryption_keys)
    if not box.ready:
        raise ApiProblem(503, "webhooks_unavailable", "no [webhooks] encryption_keys configured")
    try:
        url = check_url(doc.url, allow_private=cfg.allow_private)
        types = check_types(doc.event_types)
    except WebhookInputError as e:
        raise ApiProblem(422, "invalid", e.reason, field=e.field) from None
    if not 1 <= doc.batch_size <= cfg.max_batch:
        raise ApiProblem(422, "invalid", f"must be 1 to {cfg.max_batch}", field="batch_size")
    webhook_id = new_webhook_id()
    secret = new_secret()
    endpoint = EndpointDoc(
        event_types=types,
        batch_size=doc.batch_size,
        secrets=[box.seal(secret, webhook_id)],
        start=await svc.queue.last_event_seq(),
    )
    record = WebhookRecord(webhook_id, account_id, url, encode(endpoint))
    await svc.queue.save_webhook(record)
    stored = (await svc.queue.list_webhooks(webhook_id=webhook_id))[0]
    headers = {**request.state.rate_headers, "Cache-Control": "no-store"}
    return _json(_webhook_out(stored, secret), 201, headers)


async def get_webhook(request: Request) -> Response:
    principal = await authorize(request, KeyScope.FULL)
    record = await _own_webhook(request, principal)
    return _json(_webhook_out(record), 200, request.state.rate_headers)


async def replay_webhook(request: Request) -> Response:
    """Resend events after position `from` (an event's seq or id; 0: all still kept)."""
    svc = services(request)
    principal = await authorize(request, KeyScope.FULL)
    record = await _own_webhook(request, principal)
    raw = request.query_params.get("from", "")
    try:
        position = int(raw.removeprefix("ev_"))
        if position < 0:
            raise ValueError
    except ValueError:
        raise ApiProblem(
            422, "invalid", "expected an event position (a seq or ev_N)", field="from"
        ) from None
    doc = doc_of(record)
    doc.replay_from, doc.replay_n = position, doc.replay_n + 1
    await svc.queue.save_webhook(WebhookRecord(record.id, record.account, record.url, encode(doc)))
    return _json(S.ReplayOut(id=record.id, replay_from=position), 202, request.state.rate_headers)


# -- health, metrics, openapi --------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return _json(S.Health(status="ok", checks={}))


async def readyz(request: Request) -> Response:
    checks = await run_probes(services(request).probes)
    ok = all(v == "ok" for v in checks.values())
    return _json(S.Health(status="ok" if ok else "unavailable", checks=checks), 200 if ok else 503)


async def run_probes(
    probes: Mapping[str, Callable[[], Awaitable[None]]], patience: float = 2.0
) -> dict[str, str]:
    """Each probe answers within `patience` seconds, or its check says why not."""

    async def one(probe: Callable[[], Awaitable[None]]) -> str:
        try:
            async with asyncio.timeout(patience):
                await probe()
        except TimeoutError:
            return "timeout"
        except Exception as e:
            return f"error: {type(e).__name__}"
        return "ok"

    names = list(probes)
    results = await asyncio.gather(*(one(probes[n]) for n in names))
    return dict(zip(names, results, strict=True))


async def metrics(request: Request) -> Response:
    body, content_type = services(request).metrics.exposition()
    return Response(body, media_type=content_type)


async def openapi(request: Request) -> Response:
    from dispatcher.api.openapi import document

    return Response(document(), media_type=JSON)


# -- the route table -----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One route, with what the OpenAPI document and the scoping tests need to know."""

    method: str
    path: str
    handler: Callable[[Request], Awaitable[Response]]
    summary: str
    auth: str  # "none" | "send" | "full" | "admin"
    body: type[Any] | None = None
    ok: tuple[int, type[Any] | None] = (200, None)
    errors: tuple[int, ...] = ()


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/messages", send_one, "Send one message", "send", S.MessageIn,
             (202, S.Accepted), (400, 403, 409, 413, 422, 503)),
    Endpoint("POST", "/v1/messages/batch", send_batch, "Send up to max_batch messages",
             "send", S.BatchIn, (200, S.BatchOut), (400, 403, 413, 422)),
    Endpoint("GET", "/v1/messages", list_messages, "List an account's messages, newest first",
             "full", None, (200, S.MessagePage), (403, 404, 422)),
    Endpoint("GET", "/v1/messages/{message_id}", get_message,
             "One message: state, attempts, metadata", "full", None, (200, S.MessageOut),
             (403, 404)),
    Endpoint("POST", "/v1/accounts", create_account, "Create an account", "admin",
             S.AccountIn, (201, S.AccountOut), (400, 403, 409, 413, 422)),
    Endpoint("GET", "/v1/accounts", list_accounts, "List accounts", "admin", None,
             (200, S.AccountPage), (403, 422)),
    Endpoint("GET", "/v1/accounts/{account_id}", get_account, "One account", "full", None,
             (200, S.AccountOut), (403, 404)),
    Endpoint("PATCH", "/v1/accounts/{account_id}", patch_account,
             "Rename an account (admin: pause or resume it)", "full", S.AccountPatch,
             (200, S.AccountOut), (400, 403, 404, 409, 413, 422)),
    Endpoint("POST", "/v1/accounts/{account_id}/keys", create_key,
             "Create an API key (its token is shown once)", "full", S.KeyIn,
             (201, S.NewKeyOut), (400, 403, 404, 413, 422)),
    Endpoint("GET", "/v1/accounts/{account_id}/keys", list_keys, "List an account's keys",
             "full", None, (200, S.KeyList), (403, 404)),
    Endpoint("DELETE", "/v1/accounts/{account_id}/keys/{key_id}", revoke_key,
             "Revoke an API key", "full", None, (204, None), (403, 404)),
    Endpoint("GET", "/v1/suppressions", list_suppressions,
             "Export a suppression list (the key's account; admin: ?account= or the "
             "platform-wide list)", "full", None, (200, S.SuppressionPage), (403, 404, 422)),
    Endpoint("POST", "/v1/suppressions/import", import_suppressions,
             "Import up to 10,000 suppressions at once", "full", S.SuppressionImport,
             (200, S.Imported), (400, 403, 404, 413, 422)),
    Endpoint("GET", "/v1/suppressions/{address}", get_suppression,
             "Is this address suppressed (the account's list, then the platform's)",
             "full", None, (200, S.SuppressionOut), (403, 404, 422)),
    Endpoint("PUT", "/v1/suppressions/{address}", put_suppression,
             "Suppress an address", "full", S.SuppressionIn, (200, S.SuppressionOut),
             (400, 403, 404, 413, 422)),
    Endpoint("DELETE", "/v1/suppressions/{address}", delete_suppression,
             "Remove an address from the account's list", "full", None, (204, None),
             (403, 404, 422)),
    Endpoint("POST", "/v1/campaigns/{campaign}/cancel", cancel_campaign,
             "Cancel every waiting message of a campaign", "full", None,
             (200, S.Cancelled), (403, 404, 422)),
    Endpoint("POST", "/v1/webhooks", create_webhook,
             "Register a webhook endpoint (its secret is shown once)", "full", S.WebhookIn,
             (201, S.WebhookOut), (400, 403, 404, 413, 422, 503)),
    Endpoint("GET", "/v1/webhooks/{webhook_id}", get_webhook,
             "One endpoint and how its deliveries go (failing, disabled)", "full", None,
             (200, S.WebhookOut), (403, 404)),
    Endpoint("POST", "/v1/webhooks/{webhook_id}/replay", replay_webhook,
             "Resend the events after ?from= (a seq or ev_N)", "full", None,
             (202, S.ReplayOut), (403, 404, 422)),
    Endpoint("GET", "/healthz", healthz, "Alive", "none", None, (200, S.Health)),
    Endpoint("GET", "/readyz", readyz, "Ready: the store (and Redis when configured) answers",
             "none", None, (200, S.Health), (503,)),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics", "none"),
    Endpoint("GET", "/openapi.json", openapi, "This document", "none"),
)  # fmt: skip


# -- the application -----------------------------------------------------------------------


async def _problem_handler(request: Request, exc: Exception) -> Response:
    problem = from_exception(exc)
    if problem is None:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        problem = ApiProblem(500, "internal", "unexpected error (logged)")
    return problem.response()


async def _http_exception(request: Request, exc: Exception) -> Response:
    status = int(getattr(exc, "status_code", 500))
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    headers = getattr(exc, "headers", None)  # 405 carries Allow
    return ApiProblem(status, code, TITLE.get(status, "error"), headers=headers).response()


TITLE = {404: "no such resource", 405: "method not allowed on this resource"}


def _routes() -> list[Route]:
    """One route per path (so a 405 lists every method of the path in Allow)."""
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for e in ENDPOINTS:
        by_path.setdefault(e.path, {})[e.method] = e.handler
    routes = []
    for path, handlers in by_path.items():
        if len(handlers) == 1:
            ((method, handler),) = handlers.items()
            routes.append(Route(path, handler, methods=[method]))
            continue

        async def dispatch(
            request: Request, _h: dict[str, Callable[[Request], Awaitable[Response]]] = handlers
        ) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await _h[method](request)

        routes.append(Route(path, dispatch, methods=list(handlers)))
    return routes


def create_app(config: Config, *, queue: Queue | None = None) -> Starlette:
    """The ASGI app. With `queue`, that (opened) store is used and left open at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = await Services.open(config, queue)
        app.state.services = svc
        try:
            yield
        finally:
            await svc.close(close_queue=queue is None)

    from starlette.exceptions import HTTPException

    routes = _routes()
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # Expected errors by type (handled inside the app); anything else is a bug: a 500
        # problem, and the traceback logged by the server.
        exception_handlers={
            HTTPException: _http_exception,
            ApiProblem: _problem_handler,
            MessageError: _problem_handler,
            QueueError: _problem_handler,
            ConnectionError: _problem_handler,
            TimeoutError: _problem_handler,
            Exception: _problem_handler,
        },
    )
    app.add_middleware(MetricsMiddleware)
    return app


class MetricsMiddleware:
    """Latency per route template and status, without Starlette's BaseHTTPMiddleware."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            svc = getattr(scope["app"].state, "services", None) if "app" in scope else None
            if svc is not None:
                svc.metrics.observe(scope["method"], template, status, time.perf_counter() - start)
