"""`[events]` (the Redis stream relay, `maildispatch relay`) and `[webhooks]` (the sender,
`maildispatch webhooks`, and the API's registration of endpoints)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table
from dispatcher.config.values import parse_duration


@dataclass(frozen=True, slots=True)
class EventsConfig:
    # The Redis the relay writes to (env MAILDISPATCH_EVENTS_REDIS wins); empty: no relay.
    redis_url: str = field(default="", repr=False)
    stream: str = "maildispatch:events"
    # XADD ... MAXLEN ~ this: the stream is a window for consumers, the outbox the record.
    stream_maxlen: int = 1_000_000
    batch: int = 1000
    poll_interval: float = 0.2


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    # Key-encryption keys for endpoint secrets, newest first (env MAILDISPATCH_WEBHOOK_KEYS,
    # comma-separated, wins): the first encrypts, all decrypt (rotation).
    encryption_keys: tuple[str, ...] = field(default=(), repr=False)
    # Endpoints resolving to loopback, private or link-local addresses are refused when
    # connecting unless this is set (tests, or an operator's own network).
    allow_private: bool = False
    timeout: float = 10.0
    max_response_bytes: int = 64 * 1024
    # Consecutive failed attempts after which an endpoint is marked failing.
    failing_after: int = 5
    max_batch: int = 1000
    poll_interval: float = 0.5
    # A batch not yet full waits until its first event is this old (fewer requests).
    linger: float = 0.25
    # Deliveries at once (one batch at a time per endpoint).
    concurrency: int = 64
    # Waits after each failed attempt (Standard Webhooks' example), each with ±20% jitter;
    # after the last one fails the endpoint is disabled (a replay resumes it).
    retry_schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)


EVENTS_SECTION = Section(
    "events", ("redis_url", "stream", "stream_maxlen", "batch", "poll_interval")
)
WEBHOOKS_SECTION = Section(
    "webhooks",
    (
        "encryption_keys",
        "allow_private",
        "timeout",
        "max_response_bytes",
        "failing_after",
        "max_batch",
        "poll_interval",
        "concurrency",
        "retry_schedule",
        "linger",
    ),
)


def parse_events(t: Table) -> EventsConfig:
    d = EventsConfig()
    cfg = EventsConfig(
        redis_url=os.environ.get("MAILDISPATCH_EVENTS_REDIS") or t.text("redis_url", ""),
        stream=t.text("stream", d.stream),
        stream_maxlen=t.integer("stream_maxlen", d.stream_maxlen, minimum=1000),
        batch=t.integer("batch", d.batch, minimum=1),
        poll_interval=t.duration("poll_interval", d.poll_interval),
    )
    if not cfg.stream:
        raise ConfigError(field="events.stream", reason="must not be empty")
    t.done()
    return cfg


def parse_webhooks(t: Table) -> WebhooksConfig:
    d = WebhooksConfig()
    raw = t.raw("encryption_keys", [])
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise ConfigError(field="webhooks.encryption_keys", reason="expected a list of strings")
    env = os.environ.get("MAILDISPATCH_WEBHOOK_KEYS", "")
    keys = tuple(k.strip() for k in env.split(",") if k.strip()) if env else tuple(raw)
    for i, k in enumerate(keys):
        if len(k) < 32:
            # Never echo the key itself.
            raise ConfigError(
                field=f"webhooks.encryption_keys[{i}]", reason="must be at least 32 characters"
            )
    timeout = t.duration("timeout", d.timeout)
    if timeout <= 0:
        raise ConfigError(field="webhooks.timeout", reason="must be above 0")
    sched_raw = t.raw("retry_schedule", None)
    schedule = d.retry_schedule
    if sched_raw is not None:
        if not isinstance(sched_raw, list) or not sched_raw:
            raise ConfigError(
                field="webhooks.retry_schedule", reason="expected a non-empty list of durations"
            )
        schedule = tuple(
            parse_duration(v, f"webhooks.retry_schedule[{i}]") for i, v in enumerate(sched_raw)
        )
    cfg = WebhooksConfig(
        retry_schedule=schedule,
        encryption_keys=keys,
        allow_private=t.flag("allow_private", d.allow_private),
        timeout=timeout,
        max_response_bytes=t.integer("max_response_bytes", d.max_response_bytes, minimum=0),
        failing_after=t.integer("failing_after", d.failing_after, minimum=1),
        max_batch=t.integer("max_batch", d.max_batch, minimum=1),
        poll_interval=t.duration("poll_interval", d.poll_interval),
        concurrency=t.integer("concurrency", d.concurrency, minimum=1),
        linger=t.duration("linger", d.linger),
    )
    t.done()
    return cfg
