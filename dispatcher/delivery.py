"""Delivery lanes: one per (source IP, destination), each with a few reusable SMTP sessions.

A lane holds the messages ready for its destination from its source IP; it opens sessions on
demand (up to `sessions_per_host`, and within the engine-wide session limit), reuses each for
up to `messages_per_session` messages, and closes them when idle. Every attempt ends in an
`Attempt` handed to the engine's callback; nothing here touches the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dispatcher.circuit import CircuitBreaker
from dispatcher.routing import MxHost
from dispatcher.smtp import Phase, SendResult, Session, SessionTimeouts, make_session
from ip_pools import Pick
from queues.protocol import ClaimedMessage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Work:
    """One message on its way: what it is, where from, and how it will be signed."""

    message: ClaimedMessage
    pick: Pick
    mail_from: str
    hosts: tuple[MxHost, ...]
    signed: bytes | None = None  # the signed message, when signed ahead (off the loop)


@dataclass(frozen=True, slots=True)
class Attempt:
    work: Work
    result: SendResult
    mx_host: str | None


PrepareFn = Callable[[Work], bytes]  # returns the signed message bytes
MarkFn = Callable[[str], "asyncio.Future[bool]"]
DoneFn = Callable[[Attempt], None]


@dataclass(frozen=True, slots=True)
class LaneSettings:
    sessions_per_host: int
    messages_per_session: int
    timeouts: SessionTimeouts
    starttls: bool
    idle_timeout: float = 2.0
    client: str = "pipelining"  # or "aiosmtplib" (dispatcher.smtp.CLIENTS)


class Lane:
    """Messages for one (source IP, destination) and the sessions that carry them."""

    def __init__(
        self,
        key: tuple[str, str],
        settings: LaneSettings,
        slots: asyncio.Semaphore,
        breaker: CircuitBreaker,
        prepare: PrepareFn,
        mark: MarkFn,
        done: DoneFn,
        spawn: Callable[[Awaitable[None]], asyncio.Task[None]],
    ) -> None:
        self.key = key
        self._settings = settings
        self._slots = slots
        self._breaker = breaker
        self._prepare = prepare
        self._mark = mark
        self._done = done
        self._spawn = spawn
        self._ready: deque[Work] = deque()
        self._has_work = asyncio.Event()
        self.sessions = 0
        self.busy = 0
        self.closing = False

    def __len__(self) -> int:
        return len(self._ready)

    def put(self, work: Work) -> None:
        self._ready.append(work)
        self._has_work.set()
        idle = self.sessions - self.busy
        if idle < len(self._ready) and self.sessions < self._settings.sessions_per_host:
            self.sessions += 1
            self._spawn(self._session_loop())

    def take_all(self) -> list[Work]:
        """Remove every message not yet started (for shutdown)."""
        items = list(self._ready)
        self._ready.clear()
        return items

    async def _next(self) -> Work | None:
        deadline = time.monotonic() + self._settings.idle_timeout
        while not self._ready:
            if self.closing:
                return None
            self._has_work.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._has_work.wait(), timeout=min(remaining, 0.05))
            except TimeoutError:
                if self._slots.locked():
                    # Every session slot is taken and this one is idle: free it for a lane
                    # that has mail waiting.
                    return None
        return self._ready.popleft()

    async def _session_loop(self) -> None:
        session: Session | None = None
        host: MxHost | None = None
        try:
            async with self._slots:
                while True:
                    work = await self._next()
                    if work is None:
                        break
                    self.busy += 1
                    try:
                        if session is None or not session.is_open:
                            session, host, failure = await self._open(work)
                            if session is None:
                                self._done(Attempt(work, failure, host.name if host else None))
                                continue
                        assert host is not None
                        try:
                            attempt = await self._send(session, host, work)
                        except Exception as e:
                            # A bug, not an SMTP outcome: still settle the message. If the
                            # dot may have been written, it is ambiguous, never resent.
                            log.exception("unexpected error sending %s", work.message.id)
                            phase = Phase.DOT if session.dot_started else Phase.DATA
                            text = f"internal error: {type(e).__name__}"
                            attempt = Attempt(
                                work,
                                SendResult(phase, None, text, session.dot_started, False),
                                host.name,
                            )
                        self._done(attempt)
                        if (
                            not attempt.result.reusable
                            or session.sent >= self._settings.messages_per_session
                        ):
                            await session.close()
                            session = None
                    finally:
                        self.busy -= 1
        finally:
            self.sessions -= 1
            if session is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(session.close())

    async def _open(self, work: Work) -> tuple[Session | None, MxHost | None, SendResult]:
        """Try the destination's hosts in order: next MX on a connect failure or 4xx greeting."""
        failure = SendResult(Phase.CONNECT, None, "no reachable MX host", reusable=False)
        tried: MxHost | None = None
        source = work.pick.source
        for mx in work.hosts:
            for address in mx.addresses:
                breaker_key = f"{address}:{mx.port}"
                if not self._breaker.allow(breaker_key):
                    failure = SendResult(
                        Phase.CONNECT, None, f"circuit open for {mx.name}", reusable=False
                    )
                    continue
                tried = mx
                session = make_session(
                    self._settings.client,
                    address,
                    mx.port,
                    source_ip=source.address,
                    ehlo_name=source.ehlo,
                    timeouts=self._settings.timeouts,
                    starttls=self._settings.starttls,
                )
                result = await session.open()
                if result is None:
                    self._breaker.success(breaker_key)
                    return session, mx, failure
                failure = result
                if result.code is None or (result.code // 100) == 4:
                    self._breaker.failure(breaker_key)
                    continue
                # A 5xx greeting or EHLO: the sender's problem, another MX will not help.
                return None, mx, result
        return None, tried, failure

    async def _send(self, session: Session, host: MxHost, work: Work) -> Attempt:
        try:
            body = self._prepare(work)
        except ValueError as e:  # unsignable message (DkimSignError, MessageFormatError)
            text = f"5.6.0 cannot sign: {e}"
            return Attempt(work, SendResult(Phase.LOCAL, 554, text[:300]), host.name)
        mark = self._mark(work.message.id)
        result = await session.send(
            work.mail_from, work.message.rcpt, body, mark, smtputf8=work.message.smtputf8
        )
        return Attempt(work, result, host.name)
