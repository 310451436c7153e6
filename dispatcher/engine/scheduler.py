"""Pull-based admission in the engine: ready queues per (pool, provider, MX site), sessions
opened by admission's choice of source IP, and mail that cannot go soon sent back to the store.

- A routed, signed message goes to the ready queue of its pool, provider (route key) and MX
  site. The queue is bounded per provider: a throttled provider holds about its rate times
  `admission_wait` messages; broadcast mail beyond that goes back to the store, due when the
  queue will have drained, and claims skip that provider's broadcast mail meanwhile.
- The pump opens sessions while a queue holds more messages than sessions take from it:
  `Admission.open_session` chooses the IP by weight among those with room (spilling past IPs
  at their cap or rate, overflowing into another pool) and leases one of that IP's
  connection slots for the provider. Sessions are per (source IP, MX site); each asks
  admission before taking a message (see `dispatcher.engine.lane.Gate`).
- When no IP has room before `admission_wait`, the queue's messages go back to the store
  with their due time set to when admission can next succeed (the next token of a rate, the
  next UTC midnight for a cap), no attempt counted, and claims skip the provider until then.
  One provider waiting never holds back another: each has its own queue and sessions.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace

from dispatcher.engine.lane import Lane, Work
from dispatcher.engine.ready import ReadyQueue
from ip_pools import Admission, Decision, SourceIp
from queues.deliverability import ClaimSkip

log = logging.getLogger(__name__)

_MIN_READY = 50  # a throttled provider's queue holds at least this many
_BROADCAST = "broadcast"
_PAUSED_RECHECK = 60.0  # due time of mail waiting for an IP state only a reload changes

QueueKey = tuple[str | None, str, str]  # (pool, route key, MX site)
NotNow = Callable[[Work, float, str], None]  # back to the store, due then, with a reason
MakeLane = Callable[[SourceIp, ReadyQueue, "LaneGate"], Lane]


class LaneGate:
    """Admission for the sessions of one lane: `source` to `route_key` (a `Gate`)."""

    __slots__ = ("_sched", "messages_per_session", "queue", "route_key", "source")

    def __init__(self, sched: ProviderScheduler, source: SourceIp, queue: ReadyQueue) -> None:
        self._sched = sched
        self.source = source
        self.queue = queue
        self.route_key = queue.route_key
        self.messages_per_session = sched.admission.rule(queue.route_key).messages_per_connection

    async def admit(self) -> Decision:
        return await self._sched.admission.admit(
            self.source.address, self.route_key, self._sched.clock()
        )

    def stamp(self, work: Work) -> None:
        work.pick = replace(work.pick, source=self.source)
        work.admitted_at = self._sched.clock()

    async def refund(self) -> None:
        await self._sched.admission.refund(self.source.address, self.route_key, self.now())

    def ended(self, holder: str) -> None:
        self._sched.session_ended(self.queue, self.source.address, holder)

    def more(self) -> None:
        self._sched.pump(self.queue)

    def now(self) -> float:
        return self._sched.clock()


class ProviderScheduler:
    """The engine's ready queues and the pump that opens their sessions."""

    def __init__(
        self,
        admission: Admission,
        *,
        clock: Callable[[], float],
        make_lane: MakeLane,
        not_now: NotNow,
        spawn: Callable[[Awaitable[None]], asyncio.Task[None]],
        wait: float,
        ready_max: int,
        holder_prefix: str,
        max_sessions: int = 100,
        site_full: Callable[[ReadyQueue, Callable[[], None]], bool] | None = None,
    ) -> None:
        self.admission = admission
        self.clock = clock
        self._make_lane = make_lane
        self._not_now = not_now
        self._spawn = spawn
        self.wait = wait
        self.ready_max = ready_max
        self.queues: dict[QueueKey, ReadyQueue] = {}
        self._per_provider: dict[str, int] = {}  # messages waiting per route key
        self._skips: dict[tuple[str, str | None], float] = {}  # claim skips until then
        self._pumping: set[QueueKey] = set()
        self._timers: dict[QueueKey, asyncio.TimerHandle] = {}
        self._wakers: dict[QueueKey, Callable[[], None]] = {}
        self._holders = (f"{holder_prefix}-{n}" for n in itertools.count(1))
        self.closing = False
        # Sessions opened and not ended, engine-wide: none opens beyond max_sessions, so a
        # session admission chose by weight runs instead of waiting for another's slot.
        self.sessions = 0
        self.max_sessions = max_sessions
        self._site_full = site_full  # every MX address of the site at its session cap
        self.waiting_for_admission = 0  # sent back to the store "not now" (a counter)

    # -- the ready queues ------------------------------------------------------------------

    def __iter__(self) -> Iterator[ReadyQueue]:
        return iter(list(self.queues.values()))

    def waiting(self, route_key: str) -> int:
        """Messages in memory for `route_key`."""
        return self._per_provider.get(route_key, 0)

    def providers(self) -> dict[str, int]:
        return dict(self._per_provider)

    def bound(self, pool: str | None, route_key: str) -> int:
        """The most messages kept in memory for the provider: its rate for `wait` seconds."""
        capacity = self.admission.capacity(pool, route_key)
        if math.isinf(capacity):
            return self.ready_max
        return max(_MIN_READY, min(self.ready_max, math.ceil(capacity * self.wait)))

    def put(self, work: Work) -> None:
        """A routed, signed message (`work.route_key` set) joins its queue, or goes back to
        the store when its provider's queue is full (broadcast mail only)."""
        rk = work.route_key
        pool = work.pick.pool
        queue = self._queue(pool, rk, work.hosts[0].name)
        waiting = self._per_provider.get(rk, 0)
        bound = self.bound(pool, rk)
        if waiting >= bound and work.message.stream != "transactional":
            capacity = self.admission.capacity(pool, rk)
            drain = waiting / capacity if capacity > 0 and not math.isinf(capacity) else self.wait
            due = self.clock() + max(self.wait, drain)
            self._skips[(rk, _BROADCAST)] = due
            self._send_back(work, due, "ready queue full")
            return
        queue.append(work)
        self._per_provider[rk] = waiting + 1
        self.pump(queue)

    def taken(self, work: Work) -> None:
        """A message left its queue (a session took it, or it was sent back)."""
        rk = work.route_key
        n = self._per_provider.get(rk, 0) - 1
        if n > 0:
            self._per_provider[rk] = n
        else:
            self._per_provider.pop(rk, None)

    def _back(self, work: Work) -> None:
        self._per_provider[work.route_key] = self._per_provider.get(work.route_key, 0) + 1

    def _queue(self, pool: str | None, rk: str, site: str) -> ReadyQueue:
        key = (pool, rk, site)
        q = self.queues.get(key)
        if q is None:
            q = ReadyQueue(pool, rk, site)
            q.on_take = self.taken
            q.on_back = self._back
            self.queues[key] = q
        return q

    def _send_back(self, work: Work, due: float, reason: str) -> None:
        self.waiting_for_admission += 1
        self._not_now(work, due, reason)

    def claim_skips(self, now: float) -> list[ClaimSkip]:
        """What claims leave out now: providers that cannot take mail, full queues."""
        done = [k for k, until in self._skips.items() if until <= now]
        for k in done:
            del self._skips[k]
        skips = [ClaimSkip(rk, stream) for (rk, stream) in self._skips]
        # A whole provider skipped makes its broadcast entry redundant.
        whole = {s.provider for s in skips if s.stream is None}
        return [s for s in skips if s.stream is None or s.provider not in whole]

    # -- sessions --------------------------------------------------------------------------

    def pump(self, queue: ReadyQueue) -> None:
        """Open sessions for `queue` if it holds more than its sessions take (async)."""
        if self.closing or queue.key in self._pumping or not queue:
            return
        self._pumping.add(queue.key)
        self._spawn(self._pump(queue))

    async def _pump(self, queue: ReadyQueue) -> None:
        try:
            while (
                queue
                and queue.sessions < len(queue)
                and self.sessions < self.max_sessions
                and not self.closing
            ):
                if self._site_full is not None and self._site_full(queue, self._waker(queue)):
                    return  # woken when an address of the site frees a slot
                holder = next(self._holders)
                now = self.clock()
                choice = await self.admission.open_session(
                    queue.pool, queue.route_key, holder, now
                )
                if choice.source is None:
                    self._no_room(queue, choice.retry_at, str(choice.reason))
                    return
                lane = self._make_lane(choice.source, queue, LaneGate(self, choice.source, queue))
                if lane.capped or lane.closing:
                    # Every MX address of the site holds its session cap: a freed one kicks.
                    await self.admission.close_session(
                        choice.source.address, queue.route_key, holder
                    )
                    self._later(queue, now + 1.0)
                    return
                lane.start(holder)
                self.sessions += 1
        finally:
            self._pumping.discard(queue.key)

    def _no_room(self, queue: ReadyQueue, retry_at: float, reason: str) -> None:
        """No IP may open a session now: wait here if it is soon (or sessions still take
        from the queue), else send the queue back to the store, due then."""
        now = self.clock()
        if queue.sessions > 0:
            self._later(queue, min(retry_at, now + 1.0))
            return
        if retry_at - now <= self.wait:
            self._later(queue, retry_at)
            return
        due = retry_at if math.isfinite(retry_at) else now + _PAUSED_RECHECK
        self._skips[(queue.route_key, None)] = due
        works = queue.take_all()
        for work in works:
            self.taken(work)
            self._send_back(work, due, f"waiting for admission: {reason}")
        if works:
            log.info(
                "%d messages for %s wait for admission (%s) until %.0f",
                len(works),
                queue.route_key,
                reason,
                due,
            )

    def _later(self, queue: ReadyQueue, at: float) -> None:
        """Pump `queue` again at `at` (on the scheduler's clock)."""
        if self.closing:
            return
        old = self._timers.pop(queue.key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        delay = min(max(at - self.clock(), 0.01), self.wait)
        self._timers[queue.key] = loop.call_later(delay, self._wake, queue)

    def _waker(self, queue: ReadyQueue) -> Callable[[], None]:
        """One callable per queue (so a list of waiters holds it once)."""
        waker = self._wakers.get(queue.key)
        if waker is None:

            def waker() -> None:
                self.pump(queue)

            self._wakers[queue.key] = waker
        return waker

    def _wake(self, queue: ReadyQueue) -> None:
        self._timers.pop(queue.key, None)
        self.pump(queue)

    def session_ended(self, queue: ReadyQueue, address: str, holder: str) -> None:
        """A session ended: its slot goes back; the queue may need another session."""
        self._spawn(self._ended(queue, address, holder))

    async def _ended(self, queue: ReadyQueue, address: str, holder: str) -> None:
        self.sessions -= 1
        await self.admission.close_session(address, queue.route_key, holder)
        if queue:
            self.pump(queue)
        # An engine-wide slot freed: a queue that waited for one may open a session now.
        for other in self:
            if other is not queue and other and other.sessions < len(other):
                self.pump(other)

    # -- housekeeping ----------------------------------------------------------------------

    def remove_if(self, doomed: Callable[[Work], bool]) -> list[Work]:
        """Take the waiting messages for which `doomed` holds out of every queue."""
        out: list[Work] = []
        for q in self:
            for work in q.remove_if(doomed):
                self.taken(work)
                out.append(work)
        return out

    def close(self) -> list[Work]:
        """Stop opening sessions; every waiting message (for the engine to release)."""
        self.closing = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        out: list[Work] = []
        for q in self:
            for work in q.take_all():
                self.taken(work)
                out.append(work)
            q.has_work.set()  # idle sessions leave
        return out

    def prune(self) -> None:
        """Forget empty queues no session takes from (destinations come and go)."""
        for key in [k for k, q in self.queues.items() if not q and q.sessions == 0]:
            if key not in self._pumping and key not in self._timers:
                del self.queues[key]
                self._wakers.pop(key, None)
