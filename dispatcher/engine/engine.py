"""The engine: claim in batches, route, pick IP and platform domain, deliver, record outcomes.

One engine is one worker (one lease) on one event loop. Side tasks (mark writer, outcome
writer, heartbeat, recovery) are watched: if one dies, the engine stops.

Stopping is prompt and bounded. The moment the stop flag is seen no message starts: claiming
stops, a batch being placed goes back to the queue unstarted, lanes stop handing out work and
return what waits in them. Sessions finish the message they are on; everything (sessions,
outcome writes) is done within `shutdown_timeout` of the stop, a reserve kept for the outcome
write and the lease release. A send still going at the deadline is cut short: a dot without
its reply is ambiguous (held), a message short of its dot goes back to the queue; outcomes not
written by then are settled by recovery, as after a crash. `now` (a second signal) ends the
waiting at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from dispatcher.config import Config
from dispatcher.config.diff import Change, diff, fingerprint
from dispatcher.config.streams import Ambiguous
from dispatcher.dkim.signer import DkimSigner
from dispatcher.engine.address_slots import AddressSlots
from dispatcher.engine.coordination import Coordination, open_coordination
from dispatcher.engine.group_commit import MarkWriter, OutcomeWriter
from dispatcher.engine.lane import Attempt, Lane, LaneSettings, Work
from dispatcher.engine.outcomes import Classifier, Verdict
from dispatcher.engine.ready import ReadyQueue
from dispatcher.engine.scheduler import LaneGate, ProviderScheduler
from dispatcher.engine.stop_points import reached
from dispatcher.errors import MaildispatchError
from dispatcher.message.verp import Verp
from dispatcher.routing.router import Resolution, RouteKind, Router
from dispatcher.smtp.reply import escape_for_log
from dispatcher.telemetry.metrics import Metrics
from ip_pools import Admission, Pick, Policy, PoolSet, ProviderMap, SourceIp, WarmupProgress
from ip_pools.automation import Action, Automation, AutomationEvent
from ip_pools.categories import Category
from ip_pools.counters import ANY_PROVIDER, LocalCounters, count_key
from ip_pools.model import SENDING_STATES
from ip_pools.pools import NoSourceAvailable
from ip_pools.providers import site_key
from ip_pools.warmup import DAY, utc_day
from queues.deliverability import WarmupRecord
from queues.errors import LeaseLost, QueueUnavailable
from queues.protocol import (
    ClaimedMessage,
    Event,
    HeldFilter,
    Lease,
    MessageState,
    OutcomeRecord,
    Queue,
)

log = logging.getLogger(__name__)

_SIGN_CHUNK = 32  # messages signed per hop to the signing thread

_VERDICT_STATE = {
    Verdict.DELIVERED: MessageState.DELIVERED,
    Verdict.DEFERRED: MessageState.DEFERRED,
    Verdict.BOUNCED: MessageState.BOUNCED,
    Verdict.FAILED: MessageState.FAILED,
    Verdict.AMBIGUOUS: MessageState.AMBIGUOUS,
    Verdict.RELEASED: MessageState.QUEUED,
}


@dataclass(slots=True)
class RunStats:
    """What one run did, counted by the engine (the demo checks the sink independently)."""

    started: float = field(default_factory=time.monotonic)
    finished: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_source_ip: Counter[str] = field(default_factory=Counter)
    by_platform_domain: Counter[str] = field(default_factory=Counter)
    claimed: int = 0

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class EngineStopped(MaildispatchError, RuntimeError):
    """A side task of the engine died; `code` says which."""

    code = "engine_stopped"


class Engine:
    """One worker: a lease, a claim loop, delivery lanes and the group-commit writers."""

    def __init__(
        self,
        config: Config,
        queue: Queue,
        pools: PoolSet,
        router: Router,
        signer: DkimSigner,
        verp: Verp,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.queue = queue
        self.pools = pools
        self.router = router
        self.signer = signer
        self.verp = verp
        self.metrics = metrics
        self.clock = clock
        self.classifier = Classifier.from_config(config)
        self._settings = LaneSettings.from_config(config)
        self.automation = Automation(config.automation)
        if metrics is not None:
            metrics.config_loaded(fingerprint(config))
        # Sessions per resolved MX address, across lanes (a share of max_sessions at most).
        self.address_slots = AddressSlots(config.dispatch.mx_address_cap)
        self._ambiguous_policy = {name: s.ambiguous for name, s in config.streams.items()}
        self._lanes: dict[tuple[str, ...], Lane] = {}
        self._session_slots: asyncio.Semaphore | None = None
        self._sign_pool: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight = 0
        # Ids claimed under our lease whose outcome is not yet written: after a claim whose
        # reply was lost, everything else `sending` under our lease is released.
        self._held: set[str] = set()
        self._claim_uncertain = False
        self._stats = RunStats()
        self._progress: Callable[[RunStats], None] | None = None
        self._lease: Lease | None = None
        self._marks: MarkWriter | None = None
        self._outcomes: OutcomeWriter | None = None
        # Set the moment the stop flag is seen (monotonic): nothing starts after it, and
        # messages started anyway are counted (a bug if ever non-zero, look-aheads aside).
        self._stop_seen_at: float | None = None
        self.mails_after_stop = 0
        # The deliverability counters ([coordination]); opened at run() once registered.
        self.coordination: Coordination | None = None
        # Admission over those counters, and the ready queues per provider it feeds.
        self.providers = ProviderMap(config.providers)
        self.admission: Admission | None = None
        self.scheduler: ProviderScheduler | None = None

    # -- the run ---------------------------------------------------------------------------

    async def run(
        self,
        stop: asyncio.Event | None = None,
        *,
        drain: bool = False,
        progress: Callable[[RunStats], None] | None = None,
        now: asyncio.Event | None = None,
    ) -> RunStats:
        """Dispatch until `stop` is set (or, with drain, until nothing is due); then stop
        within `shutdown_timeout`, or at once once `now` is set."""
        stop = stop or asyncio.Event()
        self._progress = progress
        self._stats = RunStats()
        lease = await self.queue.register_worker()
        self._lease = lease
        await self._open_coordination(lease.worker_id)
        await self._open_admission(lease.worker_id)
        self._marks = MarkWriter(self.queue, lease, self.config.dispatch.mark_interval)
        self._outcomes = OutcomeWriter(
            self.queue, lease, self.config.dispatch.outcome_interval, on_applied=self._applied
        )
        slots = asyncio.Semaphore(self.config.dispatch.max_sessions)
        self._session_slots = slots
        self._sign_pool = ThreadPoolExecutor(1, thread_name_prefix="dkim-sign")
        side = {
            asyncio.create_task(self._marks.run(), name="mark-writer"),
            asyncio.create_task(self._outcomes.run(), name="outcome-writer"),
            asyncio.create_task(self._heartbeat(lease, stop), name="heartbeat"),
            asyncio.create_task(self._recovery(stop), name="recovery"),
            asyncio.create_task(self._watch_stop(stop), name="stop-watch"),
            asyncio.create_task(self._share_pauses(stop), name="coordination-pauses"),
        }
        claim = asyncio.create_task(self._claim_loop(lease, slots, stop, drain), name="claim")
        try:
            done, _ = await asyncio.wait(side | {claim}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not claim and not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    log.error("engine side task %s died: %r", task.get_name(), exc)
                    stop.set()
                    raise EngineStopped(f"{task.get_name()} died: {exc!r}", code=task.get_name())
            if claim in done:
                claim.result()
        finally:
            stop.set()
            self._begin_stop()
            await self._shutdown(claim, now)
            try:
                await self._save_warmup()
            except Exception as e:
                log.warning("warmup progress not saved at stop: %s", e)
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            if self.coordination is not None:
                await self.coordination.close()
            self._sign_pool.shutdown(wait=False)
            self._sign_pool = None
            self._stats.finished = time.monotonic()
            if self._stop_seen_at is not None:
                log.info(
                    "stopped: mails_after_stop=%d shutdown_seconds=%.3f",
                    self.mails_after_stop,
                    time.monotonic() - self._stop_seen_at,
                )
        return self._stats

    async def _open_coordination(self, worker_id: str) -> None:
        known = [ip.address for pool in self.config.pools for ip in pool.ips]
        self.coordination = await open_coordination(
            self.config, self.queue, worker_id, known, pauses=_AutomationPauses(self.automation)
        )
        if self.coordination.redis is not None:
            self.coordination.redis.on_pause.append(self._shared_pause)
        if self.metrics is not None:
            self.metrics.readiness["coordination"] = self.coordination.readiness

    def _policy(self, config: Config) -> Policy:
        return Policy(
            pools=config.pools,
            providers=ProviderMap(config.providers),
            shaping=config.shaping,
            schedules=config.warmup,
        )

    async def _open_admission(self, worker_id: str) -> None:
        """Admission over the coordination's counters; warmup progress and (in-process
        counters) the day's counts from the store, so caps hold across restarts."""
        coord = self.coordination
        assert coord is not None
        d = self.config.dispatch
        self.admission = Admission(
            self._policy(self.config),
            coord.counters,
            share=coord.share,
            # A session holds its slot for its life (at most session_deadline), renewed never.
            slot_ttl=self._settings.session_deadline + 60.0,
            rate_factor=self.automation.rate_factor,
            paused_until=self.automation.paused_until,
        )
        self.scheduler = ProviderScheduler(
            self.admission,
            clock=self.clock,
            make_lane=self._gated_lane,
            not_now=self._not_now,
            spawn=self._spawn,
            wait=d.admission_wait,
            ready_max=d.ready_max,
            holder_prefix=worker_id,
            max_sessions=d.max_sessions,
            site_full=self._site_full,
        )
        await self._load_warmup()

    async def _load_warmup(self) -> None:
        assert self.admission is not None and self.coordination is not None
        try:
            records = await self.queue.warmup_progress()
        except Exception as e:  # the store's trouble: start from the config, log it
            log.warning("warmup progress not read (%s): IPs start at their configured day", e)
            return
        schedule_of = {
            ip.address: ip.warmup.schedule
            for pool in self.config.pools
            for ip in pool.ips
            if ip.warmup is not None
        }
        progress = {
            r.address: WarmupProgress(r.day, r.on_day)
            for r in records
            if schedule_of.get(r.address) == r.schedule
        }
        self.admission.load_progress(progress)
        if not isinstance(self.coordination.counters, LocalCounters):
            return  # shared counters rebuild from the store themselves
        share = self.coordination.share
        days = {utc_day(self.clock())} | {p.on for p in progress.values()}
        seeds: dict[str, int] = {}
        for day in days:
            for (ip, rk), n in (await self.queue.daily_counts(day)).items():
                mine = -(-n * share // 1)  # this process's share, rounded up
                seeds[count_key(day, ip, rk)] = int(mine)
                seeds[count_key(day, ip)] = seeds.get(count_key(day, ip), 0) + int(mine)
        if seeds:
            await self.coordination.counters.seed_counts(seeds, (max(days) + 4) * DAY)

    async def _save_warmup(self) -> None:
        if self.admission is None:
            return
        changes = self.admission.take_progress_changes()
        if not changes:
            return
        schedule_of = {
            ip.address: ip.warmup.schedule
            for pool in self.config.pools
            for ip in pool.ips
            if ip.warmup is not None
        }
        records = [
            WarmupRecord(address, schedule_of[address], p.day, p.on)
            for address, p in changes.items()
            if address in schedule_of
        ]
        try:
            await self.queue.save_warmup_progress(records)
        except Exception:
            for address, p in changes.items():  # kept for the next pass
                self.admission.mark_progress_changed(address, p)
            raise

    def _shared_pause(self, ip: str, provider: str, until: float) -> None:
        """A pause raised by any process (pub/sub): close the lanes it covers here too."""
        if until > self.clock():
            self._close_lanes(ip, provider)

    async def _share_pauses(self, stop: asyncio.Event) -> None:
        """Put the pauses this process's automation raises into the shared counters, so
        every process stops (those not written yet are tried again while Redis is away)."""
        pending: list[tuple[str, float]] = []
        while not stop.is_set():
            coord = self.coordination
            pending += self.automation.take_unwritten()
            if coord is not None and pending:
                try:
                    for key, until in list(pending):
                        await coord.counters.pause(key, until)
                        pending.remove((key, until))
                except ConnectionError:
                    pass  # unavailable or rebuilding: they go when it answers
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.05)

    async def _watch_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._begin_stop()

    def _begin_stop(self) -> None:
        """The stop flag is seen: from here on no message starts."""
        if self._stop_seen_at is not None:
            return
        self._stop_seen_at = time.monotonic()
        if self.scheduler is not None:
            for work in self.scheduler.close():
                self._release(work.message)
        for lane in self._lanes.values():
            for work in lane.close():
                self._release(work.message)

    @property
    def stopping(self) -> bool:
        return self._stop_seen_at is not None

    def _message_started(self) -> None:
        if self._stop_seen_at is not None:
            self.mails_after_stop += 1

    async def _claim_loop(
        self, lease: Lease, slots: asyncio.Semaphore, stop: asyncio.Event, drain: bool
    ) -> None:
        batch_size = self.config.dispatch.claim_batch
        high_water = max(batch_size * 2, self.config.dispatch.max_sessions * 4)
        max_outcome_age = self.config.dispatch.max_outcome_age
        wedged = False
        assert self._outcomes is not None
        backoff = 0.0
        while not stop.is_set():
            if (
                self._inflight >= high_water
                or self._outcomes.full
                or self._outcomes.age() > max_outcome_age
            ):
                # Not fed more work: too much in flight, or the store is not taking
                # outcomes (a wedged writer would otherwise buffer without end).
                if not wedged and self._outcomes.age() > max_outcome_age:
                    wedged = True
                    log.warning(
                        "outcomes unwritten for %.1fs (%d buffered): claims paused",
                        self._outcomes.age(),
                        self._outcomes.pending,
                    )
                await asyncio.sleep(0.005)
                continue
            if wedged:
                log.warning("outcomes written again: claims resumed")
                wedged = False
            try:
                done = await self._claim_once(lease, slots, stop, drain, batch_size, high_water)
            except LeaseLost:
                log.error("lease %s/%d was taken over: stopping", lease.worker_id, lease.epoch)
                return
            except QueueUnavailable as e:
                # The queue is unreachable: stop claiming, keep outcomes buffered, retry. A
                # claim whose reply was lost may have committed: what it took is released
                # (release_unheld) before the next claim.
                self._claim_uncertain = True
                if backoff == 0.0:
                    log.warning("queue unavailable (%s): claims paused, retrying", e)
                backoff = min(max(backoff * 2, 0.1), 5.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                continue
            if backoff:
                log.warning("queue reachable again: claims resumed")
                backoff = 0.0
            if done:
                return

    async def _claim_once(
        self,
        lease: Lease,
        slots: asyncio.Semaphore,
        stop: asyncio.Event,
        drain: bool,
        batch_size: int,
        high_water: int,
    ) -> bool:
        """One claim round; True when a drain run is finished."""
        assert self._outcomes is not None
        if self._claim_uncertain:
            released = await self.queue.release_unheld(lease, list(self._held))
            if released:
                log.warning("released %d messages claimed by a lost reply", released)
            self._claim_uncertain = False
        want = min(batch_size, high_water - self._inflight)
        now = self.clock()
        skips = self.scheduler.claim_skips(now) if self.scheduler is not None else []
        if skips:
            messages = await self.queue.claim(lease, want, now, skips)
        else:
            messages = await self.queue.claim(lease, want, now)
        if messages:
            reached("after_claim")
            self._stats.claimed += len(messages)
            if self.stopping:
                # Claimed as the stop came: back to the queue, unstarted.
                for msg in messages:
                    self._inflight += 1
                    self._held.add(msg.id)
                    self._release(msg)
                return False
            await self._dispatch(messages, slots)
            return False
        if drain and self._inflight == 0:
            await self._outcomes.drain(self.config.dispatch.shutdown_timeout)
            due = await self.queue.next_due()
            return due is None or due > self.clock()
        await self._wait_for_work(stop)
        return False

    async def _wait_for_work(self, stop: asyncio.Event) -> None:
        poll = self.config.dispatch.poll_interval
        if self._inflight:
            # Sessions in flight free room soon: poll briskly rather than wait to be woken.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(poll, 0.02))
            return
        # Woken by new work, the poll interval, or the stop flag, whichever comes first.
        work = asyncio.ensure_future(self.queue.wait_for_work(poll))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                (work, stopped), timeout=poll + 1.0, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for t in (work, stopped):
                t.cancel()
            await asyncio.gather(work, stopped, return_exceptions=True)

    async def _dispatch(self, messages: list[ClaimedMessage], slots: asyncio.Semaphore) -> None:
        """Route each claimed message and put it on its lane."""
        domains = {m.rcpt_domain for m in messages}
        routes: dict[str, Resolution] = {}
        for dom in domains:
            routes[dom] = await self.router.resolve(dom)
        assert self._outcomes is not None
        now = self.clock()
        ready: list[Work] = []
        for msg in messages:
            self._inflight += 1
            self._held.add(msg.id)
            res = routes[msg.rcpt_domain]
            if res.kind != RouteKind.OK:
                self._route_failure(msg, res, now)
                continue
            rk = self.providers.route_key(msg.rcpt_domain, [h.name for h in res.hosts])
            try:
                # The platform domain is chosen now (it is signed ahead); the source IP when
                # a session that admission let open takes the message.
                pool = self.pools.spec(msg.pool)
                pick = Pick(pool.name, pool.ips[0], self.pools.pick_domain(msg.pool))
            except NoSourceAvailable as e:
                # Every IP or domain of the pool is draining or paused: the message waits.
                self._finish(
                    msg,
                    OutcomeRecord(
                        msg.id,
                        MessageState.QUEUED,
                        counts_attempt=False,
                        retry_at=now + self.config.dispatch.poll_interval * 10,
                        reply_text=str(e),
                        provider=rk,
                    ),
                )
                continue
            except KeyError:
                self._finish(
                    msg,
                    OutcomeRecord(
                        msg.id, MessageState.FAILED, reply_text=f"unknown pool {msg.pool!r}"
                    ),
                )
                continue
            ready.append(
                Work(
                    message=msg,
                    pick=pick,
                    mail_from=self.verp.address(msg.verp_token, pick.domain.domain),
                    hosts=res.hosts,
                    route_key=rk,
                )
            )
        loop = asyncio.get_running_loop()
        placed = 0
        try:
            for i in range(0, len(ready), _SIGN_CHUNK):
                if self.stopping:
                    break
                chunk = ready[i : i + _SIGN_CHUNK]
                # RSA signing is most of the CPU per message; OpenSSL releases the GIL, so a
                # thread signs on the other core while the loop keeps the sessions going.
                await loop.run_in_executor(self._sign_pool, self._sign_ahead, chunk)
                if self.stopping:
                    break
                for work in chunk:
                    self._place(work)
                    placed += 1
            # Stopped while placing: the rest goes back to the queue unstarted.
            for work in ready[placed:]:
                self._release(work.message)
            placed = len(ready)
        except BaseException:
            # Cancelled mid-batch: what never reached a lane goes back, no attempt counted.
            for work in ready[placed:]:
                self._release(work.message)
            raise

    # -- live reload -----------------------------------------------------------------------

    def apply_config(self, new: Config) -> list[Change]:
        """Apply a validated config to the running engine; what changed. In-flight sessions
        finish normally; mail waiting on a lane whose IP or platform domain no longer takes
        new mail (drained, paused, removed) goes back to the queue, unstarted, and leaves
        from the others. Changes marked restart-only are reported, not applied."""
        old = self.config
        changes = diff(old, new)
        # What a running process cannot swap keeps its running value.
        new = replace(
            new,
            queue=old.queue,
            metrics=old.metrics,
            log=old.log,
            verp=old.verp,
            dkim=old.dkim,
            routes=old.routes,
            state_dir=old.state_dir,
        )
        self.config = new
        self.pools = PoolSet(new.pools)
        self.providers = ProviderMap(new.providers)
        if self.admission is not None:
            self.admission.replace_policy(self._policy(new))
        self.classifier.categories = new.categories
        self.automation.replace_rules(new.automation)
        self._settings = LaneSettings.from_config(new)  # lanes opened from now on
        self._ambiguous_policy = {name: st.ambiguous for name, st in new.streams.items()}
        released = self._release_unsendable(new)
        lines = [str(c) for c in changes]
        log.warning(
            "config reloaded (%s): %d changes, %d waiting messages moved off drained IPs",
            fingerprint(new),
            len(changes),
            released,
        )
        if self._outcomes is not None:
            self._outcomes.add_event(
                Event(
                    "config.reloaded",
                    time.time(),
                    {"fingerprint": fingerprint(new), "changes": lines[:200], "moved": released},
                )
            )
        if self.metrics is not None:
            self.metrics.config_loaded(fingerprint(new))
        return changes

    def _release_unsendable(self, config: Config) -> int:
        sending_ips = {
            ip.address for p in config.pools for ip in p.ips if ip.state in SENDING_STATES
        }
        sending_domains = {
            d.domain for p in config.pools for d in p.domains if d.state in SENDING_STATES
        }
        released = 0
        if self.scheduler is not None:
            # Waiting mail has no IP yet (admission skips drained ones); only its platform
            # domain may have stopped taking new mail.
            moved = self.scheduler.remove_if(lambda w: w.pick.domain.domain not in sending_domains)
            for work in moved:
                self._release(work.message)
            released += len(moved)
        for (address, *_), lane in self._lanes.items():
            works = lane.take_all()
            keep = []
            for work in works:
                if address in sending_ips and work.pick.domain.domain in sending_domains:
                    keep.append(work)
                else:
                    self._release(work.message)
                    released += 1
            for work in keep:
                lane.put(work)
        return released

    def _release(self, msg: ClaimedMessage) -> None:
        self._finish(
            msg, OutcomeRecord(msg.id, MessageState.QUEUED, counts_attempt=False, retry_at=0.0)
        )

    def _postpone(self, work: Work, delay: float) -> None:
        """Back to the queue for `delay` seconds, no attempt counted (its destination's MX
        addresses are saturated: holding it here would hold the in-flight budget)."""
        msg = work.message
        retry = self.clock() + delay
        self._finish(
            msg,
            OutcomeRecord(
                msg.id,
                MessageState.QUEUED,
                counts_attempt=False,
                retry_at=retry,
                reply_text="postponed: every MX address of the destination at its session cap",
                provider=work.route_key or None,
            ),
        )

    def _place(self, work: Work) -> None:
        """A signed message goes to its provider's ready queue (admission decides which IP
        takes it), or, without admission (an engine driven without run()), to a lane."""
        if self.scheduler is not None:
            self.scheduler.put(work)
            return
        assert self._session_slots is not None
        self._lane(work, self._session_slots).put(work)

    def _gated_lane(self, source: SourceIp, queue: ReadyQueue, gate: LaneGate) -> Lane:
        """The lane of `source` to `queue`'s MX site, taking from that shared queue."""
        key = (source.address, queue.site, queue.pool or "", queue.route_key)
        lane = self._lanes.get(key)
        if lane is None or lane.closing:
            assert self._session_slots is not None
            lane = Lane(
                key[:2],
                self._settings,
                self._session_slots,
                self.router.breaker,
                self._prepare,
                self._request_mark,
                self._attempted,
                self._spawn,
                self._message_started,
                addresses=self.address_slots,
                postpone=self._postpone,
                ready=queue,
                gate=gate,
            )
            self._lanes[key] = lane
        return lane

    def _site_full(self, queue: ReadyQueue, wake: Callable[[], None]) -> bool:
        """Every MX address of `queue`'s site holds its session cap: no session could open
        (`wake` is called when one frees a slot)."""
        if not queue:
            return False
        addresses = [a for mx in queue[0].hosts for a in mx.addresses]
        slots = self.address_slots
        if not addresses or any(slots.held(a) < slots.cap for a in addresses):
            return False
        for a in addresses:
            slots.wait(a, wake)
        return True

    def _not_now(self, work: Work, due: float, reason: str) -> None:
        """Back to the store until admission can next succeed; no attempt counted."""
        msg = work.message
        self._finish(
            msg,
            OutcomeRecord(
                msg.id,
                MessageState.QUEUED,
                counts_attempt=False,
                retry_at=due,
                reply_text=reason,
                provider=work.route_key or None,
            ),
        )

    def _lane(self, work: Work, slots: asyncio.Semaphore) -> Lane:
        key = (work.pick.source.address, work.hosts[0].name)
        lane = self._lanes.get(key)
        if lane is None:
            lane = Lane(
                key,
                self._settings,
                slots,
                self.router.breaker,
                self._prepare,
                self._request_mark,
                self._attempted,
                self._spawn,
                self._message_started,
                addresses=self.address_slots,
                postpone=self._postpone,
            )
            self._lanes[key] = lane
        return lane

    def _sign_ahead(self, works: list[Work]) -> None:
        """Runs on the signing thread; a message that cannot be signed is left unsigned
        and fails as an outcome when its session tries again on the loop."""
        now = self.clock()
        for work in works:
            with contextlib.suppress(ValueError):
                work.signed = self._sign(work, now)

    def _route_failure(self, msg: ClaimedMessage, res: Resolution, now: float) -> None:
        text = f"{res.code}: {res.reason}"
        # The resolver's failures: a domain that cannot take mail, or DNS that did not answer.
        cat = Category.BadDomain if res.kind == RouteKind.BOUNCE else Category.DNSFailure
        if res.kind == RouteKind.BOUNCE:
            self._finish(
                msg, OutcomeRecord(msg.id, MessageState.BOUNCED, reply_text=text, category=cat)
            )
            return
        attempt = msg.attempts + 1
        if attempt >= self.classifier.max_attempts:
            self._finish(
                msg, OutcomeRecord(msg.id, MessageState.FAILED, reply_text=text, category=cat)
            )
            return
        retry = now + self.classifier.backoff(attempt)
        self._finish(
            msg,
            OutcomeRecord(
                msg.id, MessageState.DEFERRED, retry_at=retry, reply_text=text, category=cat
            ),
        )

    # -- per message -----------------------------------------------------------------------

    def _prepare(self, work: Work) -> bytes:
        if work.signed is not None:
            return work.signed
        return self._sign(work, self.clock())

    def _sign(self, work: Work, now: float) -> bytes:
        msg = work.message
        domains = [msg.author_domain]
        if work.pick.domain.sign and work.pick.domain.domain != msg.author_domain:
            domains.append(work.pick.domain.domain)
        return self.signer.sign(msg.body, domains, now) + msg.body

    def _request_mark(self, message_id: str) -> asyncio.Future[bool]:
        assert self._marks is not None
        return self._marks.request(message_id)

    def _attempted(self, attempt: Attempt) -> None:
        work, result = attempt.work, attempt.result
        msg = work.message
        now = self.clock()
        decision = self.classifier.decide(result, msg.attempts, now)
        verdict = decision.verdict
        if verdict == Verdict.DELIVERED:
            reached("after_2xx")
        if verdict == Verdict.AMBIGUOUS and self._ambiguous_policy.get(msg.stream) == "retry":
            verdict = Verdict.DEFERRED
            decision_retry: float | None = now + self.classifier.backoff(msg.attempts + 1)
        else:
            decision_retry = decision.retry_at
        if verdict == Verdict.RELEASED:
            decision_retry = now
        if decision.rule.sender_problem:
            log.warning(
                "sender problem from %s at %s: %s %s",
                work.pick.source.address,
                attempt.mx_host,
                result.code,
                escape_for_log(result.text, 120),  # the server's words: no forged lines
            )
        if verdict == Verdict.RELEASED and work.admitted_at is not None:
            self._refund(work)
        if verdict not in (Verdict.DELIVERED, Verdict.RELEASED) and self.automation.rules:
            fired = self.automation.observe(
                work.pick.source.address,
                work.route_key,
                result.code,
                result.text,
                decision.category,
                now,
            )
            if fired:
                self._automation_events(fired)
        code_text = result.text if result.code is None else f"{result.code} {result.text}"
        record = OutcomeRecord(
            msg.id,
            _VERDICT_STATE[verdict],
            counts_attempt=verdict != Verdict.RELEASED,
            retry_at=decision_retry,
            reply_code=result.code,
            reply_text=code_text[:500],
            source_ip=work.pick.source.address,
            platform_domain=work.pick.domain.domain,
            mx_host=attempt.mx_host,
            category=decision.category,
            provider=work.route_key or None,
            tls=attempt.tls,
            attempted_at=now,
        )
        self._finish(msg, record)

    def _refund(self, work: Work) -> None:
        """An admitted message that was never attempted gives its day's count back."""
        admission, at = self.admission, work.admitted_at
        work.admitted_at = None
        if admission is not None and at is not None:
            self._spawn(admission.refund(work.pick.source.address, work.route_key, at))

    def _automation_events(self, events: list[AutomationEvent]) -> None:
        """Record what automation did; a pause empties that (IP, provider) lane at once, so
        no MAIL for that provider is written from that IP after it fired."""
        for ev in events:
            log.warning(
                "automation: %s %s for %s %s",
                ev.kind,
                ev.ip,
                ev.provider,
                escape_for_log(ev.reason),
            )
            if self._outcomes is not None:
                self._outcomes.add_event(Event(ev.kind, ev.at, ev.data()))
            if self.metrics is not None:
                self.metrics.automation.labels(ev.kind, ev.ip, ev.provider).inc()
            if ev.kind != "ip.paused":
                continue
            self._close_lanes(ev.ip, ev.provider)

    def _close_lanes(self, ip: str, provider: str) -> None:
        """No MAIL for `provider` ("*": any) from `ip` after a pause: its lanes close."""
        paused = [
            key
            for key, lane in self._lanes.items()
            if key[0] == ip
            and provider in (lane.route_key or site_key(key[1]), ANY_PROVIDER)
        ]
        for key in paused:
            # Closed: its sessions end after the message they are on; the lane is
            # forgotten so that mail after the pause opens a new one.
            for work in self._lanes.pop(key).close():
                self._release(work.message)

    def _finish(self, msg: ClaimedMessage, record: OutcomeRecord) -> None:
        assert self._outcomes is not None
        self._inflight -= 1
        self._outcomes.add(record)
        if self.metrics is not None:
            self.metrics.outcome(record, msg, time.time())

    def _applied(self, records: list[OutcomeRecord]) -> None:
        stats = self._stats
        for r in records:
            self._held.discard(r.id)
            stats.outcomes[r.state.value] += 1
            if r.state == MessageState.DELIVERED:
                if r.source_ip:
                    stats.by_source_ip[r.source_ip] += 1
                if r.platform_domain:
                    stats.by_platform_domain[r.platform_domain] += 1
        if self._progress is not None:
            self._progress(stats)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session task crashed: %r", task.exception())

    # -- side tasks ------------------------------------------------------------------------

    async def _heartbeat(self, lease: Lease, stop: asyncio.Event) -> None:
        # Renew well within the backend's lease time-to-live.
        interval = self.queue.lease_ttl / 3
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                return
            try:
                alive = await self.queue.heartbeat(lease)
            except QueueUnavailable as e:
                log.warning("heartbeat failed: %s", e)
                continue
            if not alive:
                log.error("lease %s/%d was taken over: stopping", lease.worker_id, lease.epoch)
                stop.set()
                return

    async def _recovery(self, stop: asyncio.Event) -> None:
        interval = 10.0
        while not stop.is_set():
            try:
                report = await self.queue.recover(self.clock(), self._ambiguous_policy)
                if report.workers:
                    log.warning(
                        "recovered %d dead workers: %d requeued, %d ambiguous",
                        report.workers,
                        report.requeued,
                        report.ambiguous,
                    )
                # Shielded: a release the database made is counted even if we stop now.
                await asyncio.shield(self._release_held_after_delay())
                if self.metrics is not None:
                    self.metrics.queue_depth.set(await self.queue.active_count())
                    self.metrics.held.set(await self.queue.held_count())
            except QueueUnavailable as e:
                log.warning("recovery pass failed: %s", e)
            self._prune_lanes()
            try:
                await self._save_warmup()
            except Exception as e:
                log.warning("warmup progress not saved (kept for the next pass): %s", e)
            ticked = self.automation.tick(self.clock())
            if ticked:
                self._automation_events(ticked)
            self._shed_waiting()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def _release_held_after_delay(self) -> int:
        """Streams with `ambiguous = "release:DURATION"`: held mail whose delay is over is
        queued again (a deliberate resend, as `maildispatch held release` would)."""
        released = 0
        now = self.clock()
        for name, stream in self.config.streams.items():
            if stream.ambiguous != Ambiguous.RELEASE or stream.release_after is None:
                continue
            which = HeldFilter(stream=name, held_before=now - stream.release_after)
            n = await self.queue.release_held(which, now)
            if self.metrics is not None:
                self.metrics.held_released.inc(n)
            if n:
                log.warning("released %d held messages of stream %s after %gs", n, name,
                            stream.release_after)  # fmt: skip
            released += n
        return released

    def _shed_waiting(self) -> None:
        """Messages that waited too long on a lane go back to the queue for a while."""
        shed = sum(lane.shed(self._settings.max_wait) for lane in self._lanes.values())
        if self.scheduler is not None:
            limit = time.monotonic() - self._settings.max_wait
            stale = self.scheduler.remove_if(lambda w: w.waiting_since < limit)
            for work in stale:
                self._postpone(work, self._settings.busy_delay)
            shed += len(stale)
        if shed:
            log.warning(
                "%d messages waited over %gs for a session: postponed",
                shed,
                self._settings.max_wait,
            )

    def _prune_lanes(self) -> None:
        """Forget lanes with no sessions and nothing waiting (destinations come and go)."""
        idle = [k for k, lane in self._lanes.items() if lane.sessions == 0 and not len(lane)]
        for key in idle:
            del self._lanes[key]
        if self.scheduler is not None:
            self.scheduler.prune()

    async def _shutdown(self, claim: asyncio.Task[None], now: asyncio.Event | None) -> None:
        """Within `shutdown_timeout` of the stop: let the claim loop return its batch, let
        sessions finish their message, cut short what is left, write every outcome."""
        assert self._stop_seen_at is not None
        timeout = self.config.dispatch.shutdown_timeout
        deadline = self._stop_seen_at + timeout
        # Kept for the outcome write and the lease release (by the caller, after us).
        reserve = min(1.5, 0.25 * timeout)
        if not claim.done():
            # It returns at once (placing checks the stop flag); a claim or signing hop in
            # flight takes milliseconds. Cancelled past that: what it claimed stays under the
            # lease, for recovery.
            await _wait_tasks({claim}, min(deadline - reserve, time.monotonic() + 1.0), now)
            claim.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await claim
        pending = await _wait_tasks(set(self._tasks), deadline - reserve, now)
        for task in pending:
            task.cancel()  # each settles its message: a dot without a reply is ambiguous
        if pending:
            await asyncio.wait(pending, timeout=0.25)
        within = deadline - time.monotonic() - reserve / 3
        if now is not None and now.is_set():
            within = min(within, 1.0)
        if self._outcomes is not None and not await self._outcomes.drain(max(0.05, within)):
            log.error(
                "shutdown: %d outcomes could not be written; recovery will settle them",
                self._outcomes.pending,
            )


async def _wait_tasks(
    tasks: set[asyncio.Task[None]], until: float, now: asyncio.Event | None
) -> set[asyncio.Task[None]]:
    """Wait for `tasks` until `until` (monotonic) or until `now` is set; returns the pending."""
    pending = {t for t in tasks if not t.done()}
    if not pending or (now is not None and now.is_set()):
        return pending
    waker = asyncio.ensure_future(now.wait()) if now is not None else None
    try:
        while pending and not (now is not None and now.is_set()):
            left = until - time.monotonic()
            if left <= 0:
                break
            watched: set[asyncio.Future[Any]] = set(pending)
            if waker is not None:
                watched.add(waker)
            await asyncio.wait(watched, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            pending = {t for t in pending if not t.done()}
    finally:
        if waker is not None:
            waker.cancel()
    return pending


class _AutomationPauses:
    """The pauses this process's automation holds, for a Redis rebuild."""

    def __init__(self, automation: Automation) -> None:
        self.automation = automation

    def pauses_in_force(self, now: float) -> list[tuple[str, str, float]]:
        return [
            (a.ip, a.provider, a.until)
            for a in self.automation.active(now)
            if a.action == Action.PAUSE
        ]
