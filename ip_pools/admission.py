"""Admission: may this source IP carry one more message to this provider now, and if not,
when to ask again? And which IP of a pool should open the next session to a provider?

Pure decisions over `Counters` (see `ip_pools.counters` for their semantics):

- `admit(ip, route_key, now)` spends one message's allowance: the IP is not paused, the warmup
  caps of the day (total and per provider) have room, a rate token conforms. The answer is a
  `Decision`: yes, or no with `retry_at` (the next token for a rate, the next UTC midnight for
  a cap, the end of a pause, `math.inf` for a paused IP).
- `open_session(pool, route_key, holder, now)` chooses the IP for a new session by smooth
  weighted rotation among the pool's IPs that have room now (spill: an IP at its cap or
  rate is skipped and the others share its traffic by weight) and holds one of the IP's
  connection slots for that provider: the heaviest IP with room may hold all `connections`,
  a lighter one its weight's share of them (so weights steer sessions, hence traffic).
  When none has room it follows the pool's `overflow`
  ("wait", or another pool) and otherwise says when to ask again.

Tokens are taken `token_batch` at a time and kept for `token_hold` seconds, so that a remote
`Counters` is asked once per batch, not per message; the in-process counters need neither
(batch 1). `share` divides rates and caps when several processes keep their own in-process
counters for one set of IPs, so that together they stay under the limits.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ip_pools.counters import (
    Counters,
    count_key,
    pause_key,
    rate_key,
    slot_key,
)
from ip_pools.model import OVERFLOW_WAIT, SENDING_STATES, IpState, PoolSpec, SourceIp
from ip_pools.providers import ProviderMap
from ip_pools.rates import Rate
from ip_pools.shaping import Shaping, ShapingRule
from ip_pools.warmup import (
    DAY,
    WarmupProgress,
    WarmupSchedule,
    advance,
    complete,
    initial_progress,
    next_utc_day,
    utc_day,
)

# Counts are kept a little past their UTC day (yesterday's decides today's warmup advance).
_COUNT_TTL = 3 * DAY


class Reason(enum.StrEnum):
    """Why admission said no (or `ok`)."""

    OK = "ok"
    PAUSED = "paused"
    NOT_STARTED = "not_started"  # a warmup that starts on a later day
    CAP = "cap"  # the IP's warmup cap for the day
    PROVIDER_CAP = "provider_cap"  # the IP's per-provider warmup cap for the day
    RATE = "rate"
    CONNECTIONS = "connections"
    NO_IPS = "no_ips"


@dataclass(frozen=True, slots=True)
class Decision:
    """`ok`, or not before `retry_at` (math.inf: not while the config stays as it is)."""

    ok: bool
    retry_at: float
    reason: Reason


@dataclass(frozen=True, slots=True)
class Choice:
    """The IP to open a session from (with a connection slot held for `holder`), from `pool`
    (another pool than asked when the asked one overflowed); or none before `retry_at`."""

    source: SourceIp | None
    pool: str
    retry_at: float
    reason: Reason


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything admission decides from: pools, providers, shaping, warmup schedules."""

    pools: tuple[PoolSpec, ...]
    providers: ProviderMap = field(default_factory=lambda: ProviderMap(()))
    shaping: Shaping = field(default_factory=Shaping)
    schedules: Mapping[str, WarmupSchedule] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Caps:
    """The day's caps of an IP for a provider (None: none)."""

    total: int | None
    provider: int | None


@dataclass(slots=True)
class _Tokens:
    left: int = 0
    until: float = -math.inf


class _SmoothWeighted:
    """Smooth weighted rotation (nginx's) over the items currently eligible."""

    __slots__ = ("current", "weights")

    def __init__(self, weights: list[int]) -> None:
        self.weights = weights
        self.current = [0] * len(weights)

    def pick(self, eligible: Iterable[int]) -> int | None:
        best: int | None = None
        total = 0
        cur, weights = self.current, self.weights
        for i in eligible:
            w = weights[i]
            if w <= 0:
                continue
            cur[i] += w
            total += w
            if best is None or cur[i] > cur[best]:
                best = i
        if best is not None:
            cur[best] -= total
        return best


class Admission:
    """Decisions for one process's engine over a `Counters` implementation."""

    def __init__(
        self,
        policy: Policy,
        counters: Counters,
        *,
        share: float = 1.0,
        token_batch: int = 1,
        token_hold: float = 0.0,
        slot_ttl: float = 60.0,
        rate_factor: Callable[[str, str, float], float] | None = None,
        paused_until: Callable[[str, str, float], float] | None = None,
    ) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError("share must be in (0, 1]")
        self.policy = policy
        self.counters = counters
        self.share = share
        self.token_batch = max(1, token_batch)
        self.token_hold = token_hold
        self.slot_ttl = slot_ttl
        # Automation's "slow": the share of the shaping rate an (IP, provider) may use now.
        self.rate_factor = rate_factor
        self._slowed: dict[tuple[Rate, float], Rate] = {}
        # Pauses known here before the counters have them (automation's, as they fire).
        self.local_pause = paused_until
        self._pools = {p.name: p for p in policy.pools}
        self._ips: dict[str, SourceIp] = {ip.address: ip for p in policy.pools for ip in p.ips}
        self._rules: dict[str, ShapingRule] = {}
        self._tokens: dict[str, _Tokens] = {}
        self._taking: dict[str, list[asyncio.Future[None]]] = {}  # rate key -> waiters
        self._empty_until: dict[str, float] = {}  # rate key -> no token conforms before
        self._rotations: dict[tuple[str, str], _SmoothWeighted] = {}
        self._progress: dict[str, WarmupProgress] = {}
        self._progress_changed: dict[str, WarmupProgress] = {}

    def replace_policy(self, policy: Policy) -> None:
        """A reloaded config: new rules from now on; counts, tokens, slots and warmup
        progress are kept (they are about the IPs, not the config)."""
        self.policy = policy
        self._pools = {p.name: p for p in policy.pools}
        self._ips = {ip.address: ip for p in policy.pools for ip in p.ips}
        self._rules.clear()
        self._rotations.clear()

    def capacity(self, pool: str | None, route_key: str) -> float:
        """Messages per second the pool's sending IPs may carry to `route_key` by their rates
        (math.inf when one has no rate); caps and pauses aside. Sizes ready queues."""
        spec = self.pool(pool)
        rate = self.rule(route_key).rate
        sending = [ip for ip in spec.ips if ip.weight > 0 and ip.state in SENDING_STATES]
        if rate is None:
            return math.inf if sending else 0.0
        return len(sending) * rate.count / rate.per

    # -- rules and state --------------------------------------------------------------------

    def pool(self, name: str | None) -> PoolSpec:
        """The named pool (the first when None); KeyError for an unknown one."""
        if name is None:
            return self.policy.pools[0]
        return self._pools[name]

    def source(self, address: str) -> SourceIp:
        return self._ips[address]

    def rule(self, route_key: str) -> ShapingRule:
        """The shaping rule for a provider, with this process's share of its limits."""
        rule = self._rules.get(route_key)
        if rule is None:
            base = self.policy.shaping.rule(route_key)
            rate = base.rate
            if rate is not None and self.share < 1.0:
                rate = Rate(rate.count * self.share, rate.per, rate.burst)
            rule = ShapingRule(
                connections=max(1, int(base.connections * self.share)),
                messages_per_connection=base.messages_per_connection,
                rate=rate,
            )
            self._rules[route_key] = rule
        return rule

    def schedule(self, ip: SourceIp) -> WarmupSchedule | None:
        if ip.state != IpState.WARMING or ip.warmup is None:
            return None
        return self.policy.schedules.get(ip.warmup.schedule)

    def load_progress(self, progress: Mapping[str, WarmupProgress]) -> None:
        """Warmup progress from the store (at start); unknown addresses are ignored."""
        for address, p in progress.items():
            if address in self._ips:
                self._progress[address] = p

    def progress(self, ip: SourceIp, now: float) -> WarmupProgress | None:
        """The IP's warmup progress as known (not advanced); None when it is not warming."""
        if self.schedule(ip) is None or ip.warmup is None:
            return None
        p = self._progress.get(ip.address)
        if p is None:
            p = initial_progress(ip.warmup)
            self._progress[ip.address] = p
            self._progress_changed[ip.address] = p
        return p

    def take_progress_changes(self) -> dict[str, WarmupProgress]:
        """Progress changed since the last call (for the store); clears the list."""
        changes, self._progress_changed = self._progress_changed, {}
        return changes

    def mark_progress_changed(self, address: str, progress: WarmupProgress) -> None:
        """Keep `progress` in the changes to save (a save that failed)."""
        self._progress_changed.setdefault(address, progress)

    async def _current_progress(
        self, ip: SourceIp, schedule: WarmupSchedule, now: float
    ) -> WarmupProgress:
        p = self.progress(ip, now)
        assert p is not None
        today = utc_day(now)
        if p.on < today:
            (sent,) = await self.counters.counts([count_key(p.on, ip.address)])
            # Counts are this process's share; compare them with its share of the cap.
            scaled = WarmupSchedule(
                schedule.name,
                schedule.per_day,
                schedule.providers,
                schedule.advance_at * self.share,
            )
            p = advance(p, scaled, today, sent)
            self._progress[ip.address] = p
            self._progress_changed[ip.address] = p
        return p

    def state(self, ip: SourceIp, now: float) -> IpState:
        """The IP's effective state: a warming IP whose schedule is done is active."""
        if ip.state != IpState.WARMING:
            return ip.state
        schedule = self.schedule(ip)
        p = self.progress(ip, now)
        if schedule is None or p is None or complete(p, schedule):
            return IpState.ACTIVE
        return IpState.WARMING

    def _scaled(self, cap: int | None) -> int | None:
        return None if cap is None else int(cap * self.share)

    async def caps(self, ip: SourceIp, route_key: str, now: float) -> Caps:
        """This process's caps today for `ip` to `route_key` (None: no cap)."""
        schedule = self.schedule(ip)
        if schedule is None:
            return Caps(None, None)
        p = await self._current_progress(ip, schedule, now)
        return Caps(
            self._scaled(schedule.total_cap(p.day)),
            self._scaled(schedule.provider_cap(p.day, route_key)),
        )

    def _rate(self, address: str, route_key: str, now: float) -> Rate | None:
        """The rate of (IP, provider) now: the rule's, times automation's slow factor."""
        rate = self.rule(route_key).rate
        if rate is None or self.rate_factor is None:
            return rate
        factor = self.rate_factor(address, route_key, now)
        if factor >= 1.0:
            return rate
        factor = round(max(factor, 0.01), 3)  # few distinct rates, cached
        slowed = self._slowed.get((rate, factor))
        if slowed is None:
            slowed = Rate(rate.count * factor, rate.per, rate.burst)
            self._slowed[(rate, factor)] = slowed
        return slowed

    # -- decisions --------------------------------------------------------------------------

    async def _blocked(self, ip: SourceIp, route_key: str, now: float) -> Decision | None:
        """A pause, an unstarted warmup or a full cap: why the IP cannot send at all now."""
        if ip.state in (IpState.PAUSED, IpState.DRAINING):
            return Decision(False, math.inf, Reason.PAUSED)
        until = await self.counters.paused_until(
            [pause_key(ip.address), pause_key(ip.address, route_key)], now
        )
        if self.local_pause is not None:
            until = max(until, self.local_pause(ip.address, route_key, now))
        if until > now:
            return Decision(False, until, Reason.PAUSED)
        schedule = self.schedule(ip)
        if schedule is None:
            return None
        p = await self._current_progress(ip, schedule, now)
        today = utc_day(now)
        if p.on > today:
            return Decision(False, p.on * DAY, Reason.NOT_STARTED)
        total = self._scaled(schedule.total_cap(p.day))
        if total is None:
            return None
        per = self._scaled(schedule.provider_cap(p.day, route_key))
        keys = [count_key(today, ip.address)]
        if per is not None:
            keys.append(count_key(today, ip.address, route_key))
        got = await self.counters.counts(keys)
        if got[0] >= total:
            return Decision(False, next_utc_day(now), Reason.CAP)
        if per is not None and got[1] >= per:
            return Decision(False, next_utc_day(now), Reason.PROVIDER_CAP)
        return None

    async def room(self, ip: SourceIp, route_key: str, now: float) -> Decision:
        """Whether `admit` would say yes now, without spending anything."""
        blocked = await self._blocked(ip, route_key, now)
        if blocked is not None:
            return blocked
        rate = self._rate(ip.address, route_key, now)
        if rate is not None:
            rkey = rate_key(ip.address, route_key)
            tokens = self._tokens.get(rkey)
            if tokens is None or tokens.left <= 0 or tokens.until < now:
                empty = self._empty_until.get(rkey, 0.0)
                if empty > now:
                    return Decision(False, empty, Reason.RATE)
                at = await self.counters.next_token(rkey, rate, now)
                if at > now:
                    return Decision(False, at, Reason.RATE)
        return Decision(True, now, Reason.OK)

    async def admit(self, address: str, route_key: str, now: float) -> Decision:
        """Spend one message's allowance of `address` to `route_key`, or say when to ask again."""
        ip = self._ips[address]
        blocked = await self._blocked(ip, route_key, now)
        if blocked is not None:
            return blocked
        rate = self._rate(address, route_key, now)
        rkey = rate_key(address, route_key)
        if rate is not None:
            tokens = self._tokens.get(rkey)
            while tokens is None or tokens.left <= 0 or tokens.until < now:
                empty = self._empty_until.get(rkey, 0.0)
                if empty > now:
                    return Decision(False, empty, Reason.RATE)
                # One take per key at a time: the sessions waiting share its batch, instead
                # of each asking (and the later grants overwriting the earlier).
                waiting = self._taking.get(rkey)
                if waiting is None:
                    self._taking[rkey] = waiting = []
                    try:
                        await self._take(rkey, rate, now)
                    finally:
                        del self._taking[rkey]
                        for w in waiting:
                            if not w.done():
                                w.set_result(None)
                else:
                    # Only a remote Counters suspends, so a loop is running here.
                    w = asyncio.get_running_loop().create_future()
                    waiting.append(w)
                    await w
                tokens = self._tokens.get(rkey)
                if self._empty_until.get(rkey, 0.0) > now:
                    return Decision(False, self._empty_until[rkey], Reason.RATE)
            tokens.left -= 1
        if not await self._count(ip, route_key, now):
            if rate is not None:
                self._tokens[rkey].left += 1  # not spent: keep it for the next message
            return Decision(False, next_utc_day(now), Reason.CAP)
        return Decision(True, now, Reason.OK)

    async def _take(self, rkey: str, rate: Rate, now: float) -> None:
        grant = await self.counters.take_tokens(rkey, rate, self.token_batch, now)
        if grant.granted:
            self._tokens[rkey] = _Tokens(grant.granted, now + self.token_hold)
            self._empty_until.pop(rkey, None)
        else:
            # None conforms before then: nobody asks again sooner.
            self._empty_until[rkey] = grant.retry_at

    async def _count(self, ip: SourceIp, route_key: str, now: float) -> bool:
        """Count one message against the day's caps (warming IPs only); False when full."""
        schedule = self.schedule(ip)
        if schedule is None:
            return True
        p = await self._current_progress(ip, schedule, now)
        total = self._scaled(schedule.total_cap(p.day))
        if total is None:
            return True
        per = self._scaled(schedule.provider_cap(p.day, route_key))
        today = utc_day(now)
        expires = (today + 1) * DAY + _COUNT_TTL
        pkey = count_key(today, ip.address, route_key)
        if not await self.counters.add_count(pkey, 1, per, expires):
            return False
        if not await self.counters.add_count(count_key(today, ip.address), 1, total, expires):
            await self.counters.add_count(pkey, -1, None, expires)
            return False
        return True

    async def refund(self, address: str, route_key: str, admitted_at: float) -> None:
        """Give back the day's count of a message admitted but never attempted."""
        ip = self._ips.get(address)
        if ip is None or self.schedule(ip) is None:
            return
        day = utc_day(admitted_at)
        expires = (day + 1) * DAY + _COUNT_TTL
        await self.counters.add_count(count_key(day, address, route_key), -1, None, expires)
        await self.counters.add_count(count_key(day, address), -1, None, expires)

    # -- sessions ---------------------------------------------------------------------------

    async def open_session(
        self, pool: str | None, route_key: str, holder: str, now: float
    ) -> Choice:
        """The IP a new session to `route_key` goes out from, with a connection slot held
        for `holder`; follows the pool's overflow when no IP of it has room."""
        spec = self.pool(pool)
        seen: set[str] = set()
        retry_at = math.inf
        reason = Reason.NO_IPS
        while True:
            seen.add(spec.name)
            choice = await self._open_in(spec, route_key, holder, now)
            if choice.source is not None:
                return choice
            if choice.retry_at < retry_at:
                retry_at, reason = choice.retry_at, choice.reason
            nxt = spec.overflow
            if nxt == OVERFLOW_WAIT or nxt in seen or nxt not in self._pools:
                return Choice(None, self.pool(pool).name, retry_at, reason)
            spec = self._pools[nxt]

    async def _open_in(self, spec: PoolSpec, route_key: str, holder: str, now: float) -> Choice:
        rule = self.rule(route_key)
        rotation = self._rotations.get((spec.name, route_key))
        if rotation is None:
            rotation = _SmoothWeighted([ip.weight for ip in spec.ips])
            self._rotations[(spec.name, route_key)] = rotation
        eligible: list[int] = []
        retry_at = math.inf
        reason = Reason.NO_IPS
        for i, ip in enumerate(spec.ips):
            if ip.weight <= 0:
                continue
            d = await self.room(ip, route_key, now)
            if d.ok:
                eligible.append(i)
            elif d.retry_at < retry_at:
                retry_at, reason = d.retry_at, d.reason
        heaviest = max((spec.ips[i].weight for i in eligible), default=1)
        while eligible:
            picked = rotation.pick(eligible)
            assert picked is not None
            ip = spec.ips[picked]
            key = slot_key(ip.address, route_key)
            # Weights share the provider's sessions: the heaviest IP with room may use all
            # its connections, a lighter one its weight's share of them.
            limit = max(1, math.ceil(rule.connections * ip.weight / heaviest))
            if await self.counters.acquire_slot(key, limit, holder, self.slot_ttl, now):
                return Choice(ip, spec.name, now, Reason.OK)
            eligible.remove(picked)
            # A slot frees when a session ends; ask again soon rather than never.
            if now + 1.0 < retry_at:
                retry_at, reason = now + 1.0, Reason.CONNECTIONS
        return Choice(None, spec.name, retry_at, reason)

    async def renew_session(self, address: str, route_key: str, holder: str, now: float) -> bool:
        """Keep the session's slot (call well within `slot_ttl`); False if it was lost."""
        rule = self.rule(route_key)
        return await self.counters.acquire_slot(
            slot_key(address, route_key), rule.connections, holder, self.slot_ttl, now
        )

    async def close_session(self, address: str, route_key: str, holder: str) -> None:
        await self.counters.release_slot(slot_key(address, route_key), holder)
