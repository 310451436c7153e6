"""`maildispatch webhooks`: POSTs each account's events to its endpoints, in batches.

One loop per endpoint, one batch at a time, in outbox order, so a failing endpoint stalls
only itself (attempts at once are bounded by `[webhooks] concurrency`). A batch is frozen
(its `webhook-id` and body saved in the endpoint's state) before its first attempt and
resent byte for byte; each attempt is signed again with its own `webhook-timestamp`.

Every endpoint is untrusted: its address is resolved and checked at each connection
(loopback, private and link-local refused unless `[webhooks] allow_private`), the request
goes to the checked address (no second lookup to rebind), redirects are not followed,
each request has a total timeout and at most `max_response_bytes` of the answer is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import ipaddress
import json
import logging
import random
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from dispatcher.config import Config, ConfigError, WebhooksConfig
from dispatcher.engine.runtime import make_queue
from dispatcher.events.payload import event_object
from dispatcher.events.secrets import SecretBox
from dispatcher.events.signing import headers as signed_headers
from dispatcher.events.webhooks import (
    Batch,
    EndpointDoc,
    EndpointState,
    doc_of,
    encode,
    is_public,
    new_batch_id,
    state_of,
)
from queues.protocol import Event, Queue
from queues.webhooks import WebhookRecord

log = logging.getLogger(__name__)

# Outbox rows looked at per step of one endpoint (its events are picked out of them).
SCAN = 5000


@dataclass(frozen=True, slots=True)
class _Linger:
    """A partial batch waits this long more before it is frozen."""

    wait: float


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to."""

    status: int | None  # None: no HTTP answer (refused address, timeout, connection)
    error: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class SenderMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "maildispatch_webhook_requests",
            "Webhook POSTs by result (2xx, 4xx, 5xx, 410, timeout, refused, error)",
            ["result"],
            registry=self.registry,
        )
        self.events = Counter(
            "maildispatch_webhook_events", "Events delivered to endpoints", registry=self.registry
        )
        self.failing = Gauge(
            "maildispatch_webhooks_failing",
            "Endpoints marked failing (failed attempts in a row)",
            registry=self.registry,
        )


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None when absent/bad."""
    if not value:
        return None
    value = value.strip()[:64]
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


class WebhookSender:
    """Serves every registered endpoint until stopped."""

    def __init__(
        self,
        queue: Queue,
        config: WebhooksConfig,
        *,
        client: httpx.AsyncClient | None = None,
        metrics: SenderMetrics | None = None,
    ) -> None:
        self.queue = queue
        self.config = config
        self.box = SecretBox(config.encryption_keys)
        self.client = client or httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(config.timeout),
            limits=httpx.Limits(max_connections=config.concurrency * 2),
            trust_env=False,
        )
        self.metrics = metrics or SenderMetrics()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Start a loop per endpoint (new ones picked up every few polls) until `stop`."""
        try:
            while not stop.is_set():
                for record in await self._records():
                    task = self._loops.get(record.id)
                    if task is None or task.done():
                        if task is not None and not task.cancelled() and task.exception():
                            log.error("endpoint %s loop failed: %r", record.id, task.exception())
                        self._loops[record.id] = asyncio.create_task(
                            self._endpoint(record.id, stop), name=f"webhook-{record.id}"
                        )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(1.0, self.config.poll_interval * 4))
        finally:
            for task in self._loops.values():
                task.cancel()
            await asyncio.gather(*self._loops.values(), return_exceptions=True)
            await self.client.aclose()

    async def _records(self) -> list[WebhookRecord]:
        try:
            return await self.queue.list_webhooks()
        except Exception as e:  # the store may be down for a while: keep what runs
            log.warning("listing webhooks failed (%s)", type(e).__name__)
            return []

    async def _endpoint(self, webhook_id: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                wait = await self.step(webhook_id)
            except Exception as e:  # the store or a secret: log, back off, go on
                log.warning("webhook %s step failed (%s)", webhook_id, type(e).__name__)
                wait = 5.0
            if wait is None:
                return  # gone
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)

    async def step(self, webhook_id: str) -> float | None:
        """One step of one endpoint: build or resend its batch. Returns how long to wait
        before the next step (None: the endpoint is gone)."""
        found = await self.queue.list_webhooks(webhook_id=webhook_id)
        if not found:
            return None
        record = found[0]
        doc, state = doc_of(record), state_of(record)
        now = time.time()
        changed = False
        if doc.replay_n > state.replay_n:
            state.replay_n = doc.replay_n
            state.position = doc.replay_from if doc.replay_from is not None else doc.start
            state.batch, state.attempts, state.next_at = None, 0, 0.0
            if state.disabled == "retries_exhausted":
                state.disabled = None
            changed = True
        if state.position < 0:
            state.position, changed = doc.start, True
        if state.disabled:
            if changed:
                await self._save(record, state)
            return self.config.poll_interval * 10
        if state.batch is None:
            idle = await self._build(record, doc, state)
            if isinstance(idle, _Linger):
                if changed:
                    await self._save(record, state)
                return idle.wait
            if state.batch is None:
                if idle is not None or changed:
                    await self._save(record, state)
                return self.config.poll_interval if idle else 0.0
            await self._save(record, state)  # frozen before its first attempt
        elif changed:
            await self._save(record, state)
        if state.next_at > now:
            return min(state.next_at - now, self.config.poll_interval * 10)
        await self._attempt(record, doc, state)
        return 0.0 if state.batch is None else max(0.0, state.next_at - time.time())

    async def _build(
        self, record: WebhookRecord, doc: EndpointDoc, state: EndpointState
    ) -> bool | _Linger | None:
        """Freeze the next batch into `state.batch`; when none, advance the position past
        the rows looked at. Returns True when the outbox has nothing more (idle), False when
        more rows wait, None when nothing at all was read, a _Linger when a partial batch
        should wait."""
        rows = await self.queue.read_settled_events(state.position, SCAN)
        if not rows:
            return None
        picked: list[Event] = []
        last = rows[-1].seq
        for e in rows:
            if e.account == record.account and e.kind in doc.event_types:
                picked.append(e)
                if len(picked) >= doc.batch_size:
                    last = e.seq
                    break
        if not picked:
            state.position = last
            return len(rows) < SCAN
        now = time.time()
        if len(picked) < doc.batch_size and len(rows) < SCAN:
            # A partial batch waits until its first event is `linger` old: fewer, fuller
            # requests under a flow, at most `linger` more lag.
            wait = picked[0].at + self.config.linger - now
            if wait > 0:
                return _Linger(wait)
        body = json.dumps(
            {
                "type": "message.events",
                "timestamp": _iso(now),
                "data": {"events": [event_object(e) for e in picked]},
            },
            separators=(",", ":"),
        )
        state.batch = Batch(
            id=new_batch_id(), body=body, last_seq=last, count=len(picked), first_at=now
        )
        return False

    async def _attempt(self, record: WebhookRecord, doc: EndpointDoc, state: EndpointState) -> None:
        batch = state.batch
        assert batch is not None
        secrets = [self.box.open(s, record.id) for s in doc.secrets]
        body = batch.body.encode()
        async with self._slots:
            result = await self.post(
                record.url, signed_headers(secrets, batch.id, int(time.time()), body), body
            )
        now = time.time()
        state.last_status, state.last_error = result.status, result.error
        events: list[Event] = []
        if result.ok:
            self.metrics.requests.labels("2xx").inc()
            self.metrics.events.inc(batch.count)
            state.position = batch.last_seq
            state.batch, state.attempts, state.next_at = None, 0, 0.0
            state.delivered_batches += 1
            state.delivered_events += batch.count
            if state.failing:
                state.failing = False
                self.metrics.failing.dec()
                events.append(self._event("webhook.recovered", record, now))
        elif result.status == 410:
            self.metrics.requests.labels("410").inc()
            state.disabled = "gone"
            events.append(self._event("webhook.disabled", record, now, reason="gone"))
        else:
            label = result.error or f"{(result.status or 0) // 100}xx"
            self.metrics.requests.labels(label).inc()
            state.attempts += 1
            schedule = self.config.retry_schedule
            if state.attempts > len(schedule):
                state.disabled = "retries_exhausted"
                events.append(
                    self._event("webhook.disabled", record, now, reason="retries_exhausted")
                )
            else:
                delay = schedule[state.attempts - 1] * random.uniform(0.8, 1.2)
                if result.retry_after is not None:
                    delay = min(max(result.retry_after, 0.0), 86400.0)
                state.next_at = now + delay
            if state.attempts >= self.config.failing_after and not state.failing:
                state.failing = True
                self.metrics.failing.inc()
                events.append(self._event("webhook.failing", record, now, attempts=state.attempts))
        await self._save(record, state)
        if events:
            await self.queue.append_events(events)

    @staticmethod
    def _event(kind: str, record: WebhookRecord, now: float, **data: object) -> Event:
        return Event(kind, now, {"webhook_id": record.id, **data}, account=record.account)

    async def _save(self, record: WebhookRecord, state: EndpointState) -> None:
        await self.queue.save_webhook_state(record.id, encode(state))

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        """One POST to the endpoint's checked address, bounded in time and in what is read."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(self.config.timeout):
                address = await self._address(host, port)
                if address is None:
                    return Attempt(None, "refused")
                netloc = f"[{address}]" if ":" in address else address
                target = urlunsplit(
                    (parts.scheme, f"{netloc}:{port}", parts.path or "/", parts.query, "")
                )
                extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
                request = self.client.build_request(
                    "POST",
                    target,
                    content=body,
                    headers={**headers, "host": parts.netloc.rpartition("@")[2]},
                    extensions=extensions,
                )
                response = await self.client.send(request, stream=True)
                try:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= self.config.max_response_bytes:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            return Attempt(None, "timeout")
        except httpx.TimeoutException:
            return Attempt(None, "timeout")
        except (httpx.HTTPError, OSError) as e:
            return Attempt(None, "error:" + type(e).__name__)
        return Attempt(
            response.status_code,
            None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}",
            retry_after(response.headers.get("retry-after"), time.time()),
        )

    async def _address(self, host: str, port: int) -> str | None:
        """The address to connect to, or None when it (or any the name has) is not public
        and private ones are not allowed (a name with one private address is refused:
        rebinding tricks mix them)."""
        try:
            literal = ipaddress.ip_address(host)
            addresses = [literal]
        except ValueError:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
            addresses = [ipaddress.ip_address(str(i[4][0]).partition("%")[0]) for i in infos]
        if not addresses:
            return None
        if not self.config.allow_private and not all(is_public(a) for a in addresses):
            return None
        return str(addresses[0])


async def serve_webhooks(config: Config, stop: asyncio.Event) -> None:
    """`maildispatch webhooks`: open the store and send until `stop`."""
    if not config.webhooks.encryption_keys:
        raise ConfigError(field="webhooks.encryption_keys", reason="is required to send webhooks")
    queue = make_queue(config)
    await queue.open()
    try:
        await WebhookSender(queue, config.webhooks).run(stop)
    finally:
        await queue.close()
