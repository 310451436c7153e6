"""`[api]`: the HTTP API process (`maildispatch api`): listen address, request cap, batch
size, per-key rate limits, the operators' key, and how long key lookups are cached."""

from __future__ import annotations

from dataclasses import dataclass, field

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table
from dispatcher.config.values import parse_route


@dataclass(frozen=True, slots=True)
class ApiConfig:
    listen: str = "127.0.0.1:8025"
    max_request_bytes: int = 50 * 1024 * 1024
    max_batch: int = 10_000
    # Per API key: sustained requests per second, and how many may come at once.
    rate_limit: float = 100.0
    rate_burst: int = 200
    # The operators' key (env MAILDISPATCH_ADMIN_KEY wins); empty: no admin endpoints.
    admin_key: str = field(default="", repr=False)
    # A key's lookup is trusted this long (seconds) before the store is asked again, so a
    # revocation by another process takes effect within it.
    key_cache_ttl: float = 5.0


SECTION = Section(
    "api",
    (
        "listen",
        "max_request_bytes",
        "max_batch",
        "rate_limit",
        "rate_burst",
        "admin_key",
        "key_cache_ttl",
    ),
)


def parse_api(t: Table) -> ApiConfig:
    d = ApiConfig()
    listen = t.text("listen", d.listen)
    parse_route(listen, "api.listen")
    rate = t.number("rate_limit", d.rate_limit)
    if rate <= 0:
        raise ConfigError(
            field="api.rate_limit", reason="must be above 0 (requests per second per key)"
        )
    api = ApiConfig(
        listen=listen,
        max_request_bytes=t.integer("max_request_bytes", d.max_request_bytes, minimum=1024),
        max_batch=t.integer("max_batch", d.max_batch, minimum=1),
        rate_limit=rate,
        rate_burst=t.integer("rate_burst", d.rate_burst, minimum=1),
        admin_key=t.text("admin_key", ""),
        key_cache_ttl=t.duration("key_cache_ttl", d.key_cache_ttl),
    )
    if api.admin_key and len(api.admin_key) < 24:
        raise ConfigError(
            field="api.admin_key", reason="must be at least 24 characters (or leave it empty)"
        )
    t.done()
    return api
