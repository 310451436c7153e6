"""Delivery lanes: one per (source IP, destination), each with a few reusable SMTP sessions.

A lane holds the messages ready for its destination from its source IP; it opens sessions on
demand (up to `sessions_per_host`, and within the engine-wide session limit), reuses each for
up to `messages_per_session` messages, and closes them when idle. Every attempt ends in an
`Attempt` handed to the engine's callback; nothing here touches the queue.

With `send_ahead` (pipelining client), a session takes the next ready message while sending
one: its commands ride with the current dot (see `dispatcher.smtp.pipelining`). A look-ahead that
never reaches its own dot because the session ended, the engine is closing or its message was
not sendable is released (a `Phase.MARK` result: back to the queue, no attempt counted).

Each message's `Commit` asks the group-commit writer for its mark when its session says (the
body written up to the final dot) and passes the stop points around the dot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from dispatcher.config import Client, Config, StartTls
from dispatcher.engine.address_slots import AddressSlots
from dispatcher.engine.deadline import BeforeDot
from dispatcher.engine.ready import ReadyQueue
from dispatcher.engine.stop_points import reached
from dispatcher.routing.circuit import CircuitBreaker
from dispatcher.routing.router import MxHost
from dispatcher.smtp import make_session
from dispatcher.smtp.session import Ahead, MarkAt, Phase, SendResult, Session, SessionTimeouts
from ip_pools import Decision, Pick
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
    waiting_since: float = 0.0  # when it was put on its lane (monotonic)
    route_key: str = ""  # its provider (or MX site), for admission and the store
    admitted_at: float | None = None  # when admission counted it (refunded if not attempted)


class MessageCommit:
    """One message's committing mark: asked of the group-commit writer when the session
    says (its body written up to the final dot), given up when the dot will not be written."""

    __slots__ = ("_mark", "_request", "message_id")

    def __init__(self, request: MarkFn, message_id: str) -> None:
        self._request = request
        self.message_id = message_id
        self._mark: asyncio.Future[bool] | None = None

    def request(self) -> asyncio.Future[bool]:
        reached("after_body")
        self._mark = self._request(self.message_id)
        return self._mark

    def cancel(self) -> None:
        mark = self._mark
        if mark is not None and not mark.done():
            mark.cancel()

    def dot_written(self) -> None:
        reached("after_dot")


@dataclass(slots=True)
class _Next:
    """A look-ahead: taken from the ready queue while the previous message was sent."""

    work: Work
    body: bytes
    commit: MessageCommit


def released(reason: str) -> SendResult:
    """The result of a message whose dot was never written and that was never refused:
    it goes back to the queue without counting an attempt."""
    return SendResult(Phase.MARK, None, f"released: {reason}", reusable=False)


def cut_short(dot_written: bool) -> SendResult:
    """The result of a send stopped by the shutdown deadline: a dot still unanswered is
    ambiguous (held); short of its dot, the message goes back to the queue."""
    if dot_written:
        text = "no reply to the final dot before the shutdown deadline"
        return SendResult(Phase.DOT, None, text, dot_written=True, reusable=False)
    return released("shutdown deadline")


@dataclass(frozen=True, slots=True)
class Attempt:
    work: Work
    result: SendResult
    mx_host: str | None
    tls: bool | None = None  # whether the session was under STARTTLS


class Gate(Protocol):
    """Admission for one lane's sessions: its source IP to its provider (see
    `ip_pools.admission`). A session takes a message only after `admit` said yes."""

    route_key: str
    messages_per_session: int

    async def admit(self) -> Decision:
        """One message's allowance for this IP and provider, or when to ask again."""

    def stamp(self, work: Work) -> None:
        """`work` is taken by this lane: it leaves from this lane's IP."""

    async def refund(self) -> None:
        """An allowance taken that no message used."""

    def ended(self, holder: str) -> None:
        """A session of this lane ended (its connection slot goes back)."""

    def more(self) -> None:
        """The lane could take sessions again (an MX address freed a slot)."""

    def now(self) -> float:
        """The clock admission's times are on."""


@dataclass(slots=True)
class _Seat:
    """One session's place in a gated lane: its slot holder id and an unused allowance."""

    holder: str = ""
    credit: bool = False


PrepareFn = Callable[[Work], bytes]  # returns the signed message bytes
MarkFn = Callable[[str], "asyncio.Future[bool]"]
DoneFn = Callable[[Attempt], None]
PostponeFn = Callable[["Work", float], None]  # back to the queue after a delay, no attempt

# `_open`'s failure when every address of the destination held its session cap.
_BUSY = SendResult(Phase.CONNECT, None, "every MX address at its session cap", reusable=False)


def _addresses_of(work: Work) -> list[str]:
    return [a for mx in work.hosts for a in mx.addresses]


@dataclass(frozen=True, slots=True)
class LaneSettings:
    sessions_per_host: int
    messages_per_session: int
    timeouts: SessionTimeouts
    starttls: bool
    client: Client  # dispatcher.smtp.CLIENTS
    send_ahead: bool  # pipelining client: next message's commands ride with the dot
    idle_timeout: float = 2.0
    mark_at: MarkAt = MarkAt.DOT  # when the committing mark is asked for
    message_deadline: float = 120.0  # until the final dot is written (never after it)
    session_deadline: float = 600.0  # no new message on a session older than this
    busy_delay: float = 15.0  # a message shed by a saturated lane waits this long
    max_wait: float = 30.0  # a message waiting longer than this on its lane is shed

    @classmethod
    def from_config(cls, config: Config) -> LaneSettings:
        """The lanes' settings from `[dispatch]` and `[smtp]`."""
        return cls(
            sessions_per_host=config.dispatch.sessions_per_host,
            messages_per_session=config.dispatch.messages_per_session,
            timeouts=SessionTimeouts.from_config(config.smtp),
            starttls=config.smtp.starttls == StartTls.OPPORTUNISTIC,
            client=config.smtp.client,
            send_ahead=config.smtp.send_ahead,
            mark_at=config.smtp.mark_at,
            message_deadline=config.smtp.message_deadline,
            session_deadline=config.smtp.session_deadline,
        )


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
        started: Callable[[], None] | None = None,
        addresses: AddressSlots | None = None,
        postpone: PostponeFn | None = None,
        ready: ReadyQueue | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.key = key
        self._settings = settings
        self._slots = slots
        self._breaker = breaker
        self._prepare = prepare
        self._mark = mark
        self._done = done
        self._spawn = spawn
        self._started = started  # told when a message's MAIL is about to be written
        self._addresses = addresses  # sessions per MX address, engine-wide
        self._postpone = postpone  # back to the queue for later, no attempt counted
        # Every address of the destination held its cap when a session last tried: no new
        # session until one frees a slot (AddressSlots wakes us).
        self._capped = False
        # Shared (with admission: one queue per pool, provider and MX site, taken from by the
        # lanes of every IP sending there) or this lane's own.
        self._own = ready is None
        self._ready: ReadyQueue = ReadyQueue() if ready is None else ready
        self._has_work = self._ready.has_work
        self._gate = gate
        self._per_session = (
            gate.messages_per_session if gate is not None else settings.messages_per_session
        )
        self.route_key = gate.route_key if gate is not None else ""
        self.sessions = 0
        self.busy = 0
        self.closing = False

    def __len__(self) -> int:
        return len(self._ready) if self._own else 0

    @property
    def capped(self) -> bool:
        """Every MX address of the destination held its session cap at the last try."""
        return self._capped

    def start(self, holder: str) -> None:
        """A gated lane: one more session, holding connection slot `holder`."""
        self.sessions += 1
        self._ready.sessions += 1
        self._spawn(self._session_loop(_Seat(holder)))

    def put(self, work: Work) -> None:
        work.waiting_since = time.monotonic()
        self._ready.append(work)
        self._has_work.set()
        self._grow()

    def shed(self, older_than: float) -> int:
        """Hand back (postponed, no attempt counted) the messages that waited here longer
        than `older_than` seconds without a session: a destination slower than its share
        (a tarpit behind many names) must not hold the engine's in-flight budget."""
        if self._postpone is None or not self._ready or not self._own:
            return 0
        limit = time.monotonic() - older_than
        stale = [w for w in self._ready if w.waiting_since < limit]
        if not stale:
            return 0
        self._ready.remove_if(lambda w: w.waiting_since < limit)
        for work in stale:
            self._postpone(work, self._settings.busy_delay)
        return len(stale)

    def _grow(self) -> None:
        if self._gate is not None:
            self._gate.more()  # admission decides which IP opens the next session
            return
        idle = self.sessions - self.busy
        if (
            idle < len(self._ready)
            and self.sessions < self._settings.sessions_per_host
            and not self._capped
        ):
            self.sessions += 1
            self._spawn(self._session_loop())

    def kick(self) -> None:
        """An MX address of this lane freed a slot: try a session again if mail waits."""
        self._capped = False
        if self._ready and not self.closing:
            self._grow()

    def take_all(self) -> list[Work]:
        """Remove every message not yet started; sessions go on (a reload moves them).
        A shared queue is the engine's to empty."""
        return self._ready.take_all() if self._own else []

    def close(self) -> list[Work]:
        """Stop handing out work at once; returns every message not yet started (shutdown).
        Sessions finish the message they are on, then end."""
        self.closing = True
        items = self._ready.take_all() if self._own else []
        self._has_work.set()  # wake idle sessions so that they leave now
        return items

    async def _next(self, seat: _Seat) -> Work | None:
        if self.closing:
            return None
        deadline = time.monotonic() + self._settings.idle_timeout
        while True:
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
                        # Every session slot is taken and this one is idle: free it for a
                        # lane that has mail waiting.
                        return None
            gate = self._gate
            if gate is None:
                return self._ready.popleft()
            if not seat.credit:
                decision = await gate.admit()
                if not decision.ok:
                    wait = decision.retry_at - gate.now()
                    if wait > self._settings.idle_timeout:
                        return None  # not soon: the session ends, the engine decides
                    await asyncio.sleep(min(max(wait, 0.0), 0.25))
                    if self.closing:
                        return None
                    continue
                seat.credit = True
            if not self._ready:
                continue  # another session took it meanwhile: the allowance is kept
            seat.credit = False
            work = self._ready.popleft()
            gate.stamp(work)
            return work

    async def _session_loop(self, seat: _Seat | None = None) -> None:
        seat = seat or _Seat()
        session: Session | None = None
        host: MxHost | None = None
        nxt: _Next | None = None  # a look-ahead taken by the previous send
        held: str | None = None  # the MX address whose slot this session holds
        opened_at = 0.0
        loop = asyncio.get_running_loop()
        try:
            async with self._slots:
                while True:
                    if nxt is not None:
                        work, ahead_of, nxt = nxt.work, nxt, None
                    else:
                        ahead_of = None
                        got = await self._next(seat)
                        if got is None:
                            break
                        work = got
                    self.busy += 1
                    try:
                        if ahead_of is not None and self.closing:
                            # Shutting down: its commands may be on the wire, not its dot.
                            ahead_of.commit.cancel()
                            self._done(Attempt(work, released("shutting down"), None))
                            if session is not None:
                                await session.close()
                                session = None
                            continue
                        if (
                            session is not None
                            and ahead_of is None
                            and loop.time() - opened_at > self._settings.session_deadline
                        ):
                            # Old enough: no new message on it (a slow server keeps none).
                            # A look-ahead already on its wire goes first: none is taken
                            # past the deadline (`young` below).
                            await session.close()
                            session = None
                        if session is None or not session.is_open:
                            if held is not None:
                                self._release_address(held)
                                held = None
                            try:
                                session, host, failure, held = await self._open(work)
                            except asyncio.CancelledError:
                                if ahead_of is not None:
                                    ahead_of.commit.cancel()
                                self._done(Attempt(work, released("shutting down"), None))
                                raise
                            opened_at = loop.time()
                            if failure is _BUSY:
                                # Every address at its cap: wait for a slot, not a session.
                                if self._gate is not None and work.admitted_at is not None:
                                    work.admitted_at = None
                                    seat.credit = True  # unused: given back as the session ends
                                self._ready.appendleft(work)
                                if self._gate is not None:
                                    # The site is full, not this IP: the engine opens the
                                    # next session when an address frees a slot.
                                    for address in _addresses_of(work):
                                        self._wait_address(address, self._gate.more)
                                    break
                                self._capped = True
                                for address in _addresses_of(work):
                                    self._wait_address(address)
                                break
                            if session is None:
                                if ahead_of is not None:
                                    ahead_of.commit.cancel()
                                self._done(Attempt(work, failure, host.name if host else None))
                                continue
                            if self.closing:
                                # The stop came while connecting: its MAIL is not written yet,
                                # so it does not start.
                                self._done(Attempt(work, released("shutting down"), None))
                                await session.close()
                                session = None
                                continue
                        assert host is not None
                        taken: list[_Next] = []
                        try:
                            young = loop.time() - opened_at <= self._settings.session_deadline
                            attempt = await self._send(
                                session, host, work, ahead_of, taken, seat, young=young
                            )
                        except asyncio.CancelledError:
                            # The shutdown deadline: settle the message before leaving.
                            self._done(Attempt(work, cut_short(session.dot_written), host.name))
                            raise
                        except Exception as e:
                            # A bug, not an SMTP outcome: still settle the message. If the
                            # dot may have been written, it is ambiguous, never resent.
                            log.exception("unexpected error sending %s", work.message.id)
                            phase = Phase.DOT if session.dot_written else Phase.DATA
                            text = f"internal error: {type(e).__name__}"
                            attempt = Attempt(
                                work,
                                SendResult(
                                    phase,
                                    None,
                                    text,
                                    dot_written=session.dot_written,
                                    reusable=False,
                                ),
                                host.name,
                            )
                        finally:
                            nxt = taken[0] if taken else None
                        self._done(attempt)
                        if nxt is not None and not (attempt.result.reusable and session.is_open):
                            # The session ended with the look-ahead short of its dot.
                            nxt.commit.cancel()
                            self._done(Attempt(nxt.work, released("session ended"), host.name))
                            nxt = None
                        if (
                            not attempt.result.reusable
                            or session.sent >= self._per_session
                        ):
                            await session.close()
                            session = None
                            if self._gate is not None and nxt is None:
                                # One connection per gated session: admission chooses the
                                # IP of the next one (weights steer sessions).
                                break
                    finally:
                        self.busy -= 1
        finally:
            self.sessions -= 1
            if self._gate is not None:
                self._ready.sessions -= 1
                if seat.credit:
                    self._spawn(self._gate.refund())
                self._gate.ended(seat.holder)
            if nxt is not None:
                # Cancelled with a look-ahead taken: it never reached its dot.
                nxt.commit.cancel()
                self._done(Attempt(nxt.work, released("session cancelled"), None))
            if session is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(session.close())
            if held is not None:
                self._release_address(held)

    def _release_address(self, address: str) -> None:
        if self._addresses is not None:
            self._addresses.release(address)

    def _wait_address(self, address: str, wake: Callable[[], None] | None = None) -> None:
        if self._addresses is not None:
            self._addresses.wait(address, wake or self.kick)

    async def _open(
        self, work: Work
    ) -> tuple[Session | None, MxHost | None, SendResult, str | None]:
        """Try the destination's hosts in order: next MX on a connect failure or 4xx greeting.

        Returns the session, its host, the last failure and the address whose slot the
        session holds; `_BUSY` as the failure when every address was at its session cap."""
        failure = SendResult(Phase.CONNECT, None, "no reachable MX host", reusable=False)
        tried: MxHost | None = None
        busy = False
        source = work.pick.source
        slots = self._addresses
        for mx in work.hosts:
            for address in mx.addresses:
                breaker_key = f"{address}:{mx.port}"
                if not self._breaker.allow(breaker_key):
                    failure = SendResult(
                        Phase.CONNECT, None, f"circuit open for {mx.name}", reusable=False
                    )
                    continue
                if slots is not None and not slots.try_acquire(address):
                    busy = True
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
                    mark_at=self._settings.mark_at,
                )
                result = await self._bounded_open(session)
                if result is None:
                    self._breaker.success(breaker_key)
                    return session, mx, failure, address
                self._release_address(address)
                failure = result
                if result.code is None or (result.code // 100) == 4:
                    self._breaker.failure(breaker_key)
                    continue
                # A 5xx greeting or EHLO: the sender's problem, another MX will not help.
                return None, mx, result, None
        if busy and tried is None:
            return None, None, _BUSY, None
        return None, tried, failure, None

    async def _bounded_open(self, session: Session) -> SendResult | None:
        """`session.open()` within the message deadline (a tarpit greeting, EHLO, STARTTLS)."""
        deadline = self._settings.message_deadline
        try:
            async with asyncio.timeout(deadline):
                return await session.open()
        except TimeoutError:
            await asyncio.shield(session.close())
            return SendResult(
                Phase.CONNECT,
                None,
                f"message deadline ({deadline:g}s) passed while opening",
                reusable=False,
            )
        except BaseException:
            await asyncio.shield(session.close())
            raise

    async def _send(
        self,
        session: Session,
        host: MxHost,
        work: Work,
        ahead_of: _Next | None,
        taken: list[_Next],
        seat: _Seat,
        *,
        young: bool = True,
    ) -> Attempt:
        """Send `work` (a look-ahead when `ahead_of` is given) within the message deadline;
        a look-ahead taken for the next message is appended to `taken` as soon as it is
        taken (none when the session is past its deadline: not `young`)."""
        deadline = self._settings.message_deadline
        guard = BeforeDot(asyncio.get_running_loop().time() + deadline, lambda: session.dot_written)
        async with guard:
            return await self._send_now(session, host, work, ahead_of, taken, seat, young)
        # The deadline passed before the dot was written: the client dropped the link.
        text = f"message deadline ({deadline:g}s) passed before the final dot"
        return Attempt(work, SendResult(Phase.DATA, None, text, reusable=False), host.name)

    async def _send_now(
        self,
        session: Session,
        host: MxHost,
        work: Work,
        ahead_of: _Next | None,
        taken: list[_Next],
        seat: _Seat,
        young: bool,
    ) -> Attempt:
        if ahead_of is not None:
            body, commit = ahead_of.body, ahead_of.commit
        else:
            try:
                body = self._prepare(work)
            except ValueError as e:  # unsignable message (DkimSignError, MessageFormatError)
                text = f"5.6.0 cannot sign: {e}"
                return Attempt(work, SendResult(Phase.LOCAL, 554, text[:300]), host.name)
            commit = MessageCommit(self._mark, work.message.id)
            if self._started is not None:
                self._started()
        msg = work.message
        if not (self._settings.send_ahead and session.pipelining and young):
            result = await session.send(
                work.mail_from, msg.rcpt, body, commit, smtputf8=msg.smtputf8
            )
            return Attempt(work, result, host.name, session.tls_active)
        pipelined = session
        if self._gate is not None and self._ready and not seat.credit:
            # The look-ahead is taken just before the dot, without waiting: admit it now.
            seat.credit = (await self._gate.admit()).ok

        def ahead() -> Ahead | None:
            # Called by the session just before it writes this message's dot.
            nxt = self._take_ahead(pipelined, seat)
            if nxt is None:
                return None
            taken.append(nxt)
            m = nxt.work.message
            return Ahead(nxt.work.mail_from, m.rcpt, nxt.commit, m.smtputf8)

        result = await session.send(
            work.mail_from, msg.rcpt, body, commit, smtputf8=msg.smtputf8, ahead=ahead
        )
        return Attempt(work, result, host.name, session.tls_active)

    def _take_ahead(self, session: Session, seat: _Seat) -> _Next | None:
        """The next ready message to pipeline behind this one (its MAIL goes out with this
        message's dot; its mark is asked for after its own body); None when sending ahead
        does not apply."""
        if (
            not self._ready
            or self.closing
            or not session.pipelining
            # Never on the session's last message: the look-ahead would have no session.
            or session.sent + 2 > self._per_session
            or (self._gate is not None and not seat.credit)
        ):
            return None
        work = self._ready[0]
        try:
            body = self._prepare(work)
        except ValueError:
            return None  # it fails on its own turn, without a look-ahead
        self._ready.popleft()
        if self._gate is not None:
            seat.credit = False
            self._gate.stamp(work)
        if self._started is not None:
            self._started()
        return _Next(work, body, MessageCommit(self._mark, work.message.id))
