"""The Python API: one object that owns a queue, the message factory and the engine.

    rt = await Runtime.open(config)
    results = await rt.enqueue(payloads)   # all-or-nothing; MessageError names index and field
    stats = await rt.run(drain=True)
    await rt.close()

Lifetimes are explicit: `open` builds and checks everything (keys, queue schema) before any
message moves; `close` releases the queue and this process's worker locks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from dispatcher.config import Config, Route
from dispatcher.dkim.signer import DkimSigner
from dispatcher.dkim.store import KeyStore
from dispatcher.engine.engine import Engine, RunStats
from dispatcher.message.intake import MessageError, MessageFactory
from dispatcher.message.verp import Verp
from dispatcher.routing.address_policy import AddressPolicy
from dispatcher.routing.circuit import CircuitBreaker
from dispatcher.routing.router import Router
from dispatcher.telemetry.metrics import Metrics
from ip_pools import PoolSet
from queues import open_queue
from queues.accounts import AccountSeed
from queues.protocol import EnqueueResult, NewMessage, Queue

log = logging.getLogger(__name__)


def make_queue(config: Config) -> Queue:
    """The configured backend (not yet opened)."""
    q = config.queue
    if q.backend == "postgres":
        return open_queue("postgres", dsn=q.dsn, lease_ttl=q.lease_ttl)
    return open_queue("sqlite", path=q.path, synchronous=q.synchronous, lease_ttl=q.lease_ttl)


def account_seeds(config: Config) -> list[AccountSeed]:
    """The accounts declared in config.toml, as store seeds (the config name is the id)."""
    return [AccountSeed(a.name, a.author_domains, a.pool) for a in config.accounts]


async def seed_accounts(queue: Queue, config: Config) -> list[str]:
    """Insert the config's accounts that the store lacks (never overwriting one); returns
    the ids inserted. Run by `db migrate` and, on SQLite, at every open (first start)."""
    inserted = await queue.seed_accounts(account_seeds(config))
    if inserted:
        log.info("seeded accounts from config: %s", ", ".join(inserted))
    return inserted


async def open_store(config: Config) -> Queue:
    """The configured queue, opened; on SQLite the config's accounts are seeded (the
    embedded store has no separate migrate step)."""
    queue = make_queue(config)
    await queue.open()
    if config.queue.backend == "sqlite":
        try:
            await seed_accounts(queue, config)
        except BaseException:
            await queue.close()
            raise
    return queue


class Runtime:
    """Owns one configured queue, signer, router and engine."""

    def __init__(
        self,
        config: Config,
        queue: Queue,
        keys: KeyStore,
        verp: Verp,
        factory: MessageFactory,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.queue = queue
        self.keys = keys
        self.verp = verp
        self.factory = factory
        self.metrics = metrics
        self.signer = DkimSigner(keys, config.dkim.canonicalization)
        self.router = Router(
            config.routes,
            breaker=CircuitBreaker(config.smtp.circuit_failures, config.smtp.circuit_open_seconds),
            policy=AddressPolicy(config.routing.allow_private),
        )
        self.pools = PoolSet(config.pools)
        self._running: Engine | None = None

    @classmethod
    async def open(
        cls, config: Config, *, routes: Mapping[str, tuple[Route, ...]] | None = None
    ) -> Runtime:
        """Check keys, open the queue; `routes` adds route overrides (demo, bench, tests)."""
        if routes:
            config = replace(config, routes={**config.routes, **routes})
        insecure = config.security.allow_insecure_permissions
        keys = KeyStore.load(config.dkim, allow_insecure=insecure)
        verp = Verp.from_file(config.verp.secret_file, config.verp.prefix, allow_insecure=insecure)
        factory = MessageFactory.from_config(config, verp)
        queue = await open_store(config)
        return cls(config, queue, keys, verp, factory, Metrics())

    def build(self, payloads: Sequence[Mapping[str, object]]) -> list[NewMessage]:
        """Validate and render; a MessageError gets `index` set to the payload's position."""
        now = time.time()
        out: list[NewMessage] = []
        for i, payload in enumerate(payloads):
            try:
                out.append(self.factory.build(payload, now=now))
            except MessageError as e:
                e.index = i
                raise
        return out

    async def enqueue(self, payloads: Sequence[Mapping[str, object]]) -> list[EnqueueResult]:
        """Validate, render and store; nothing is stored when any payload is bad."""
        return await self.queue.enqueue_many(self.build(payloads))

    def engine(self) -> Engine:
        return Engine(
            self.config,
            self.queue,
            self.pools,
            self.router,
            self.signer,
            self.verp,
            self.metrics,
        )

    async def run(
        self,
        *,
        drain: bool = False,
        stop: asyncio.Event | None = None,
        progress: Callable[[RunStats], None] | None = None,
        now: asyncio.Event | None = None,
    ) -> RunStats:
        """Dispatch until stopped (or, with drain, until nothing is due); `now` cuts the
        shutdown short (see `Engine.run`)."""
        engine = self._running = self.engine()
        try:
            return await engine.run(stop, drain=drain, progress=progress, now=now)
        finally:
            self._running = None

    def apply_config(self, new: Config) -> None:
        """A validated config (live reload): applied to the running engine, if any; what a
        running process cannot swap keeps its running value (see `Engine.apply_config`)."""
        if self._running is not None:
            self._running.apply_config(new)
            self.config, self.pools = self._running.config, self._running.pools
        else:
            self.config, self.pools = new, PoolSet(new.pools)

    async def close(self) -> None:
        await self.queue.close()

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
