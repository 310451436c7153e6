"""Automation: what providers answer, turned into actions on one (source IP, provider).

`[[automation]]` rules are data: a reply pattern and/or categories, an action (`slow` or
`pause`), a duration and an optional trigger ("3/10m": only after 3 matches within 10
minutes). Every reply (and connection failure) is checked against the rules in order; the
first rule that matches counts it, and fires when its trigger is met:

- `slow` lowers the rate of that IP to that provider to `factor` of its shaping rate, and
  recovers step by step (`steps` equal steps over `duration`) back to the full rate; a slow
  firing again while in force lowers it further (never below `min_factor`) and starts over;
- `pause` stops that IP for that provider only, until `duration` has passed; the engine writes
  no MAIL for that provider from that IP after it fired, and its waiting mail leaves from the
  pool's other IPs. The pause is also put into the `Counters` (`pause_key`), so admission in
  every process sharing them honours it.

Both end by themselves; operators can pause, resume and clear by hand. Decisions here are
synchronous and in memory (a reply is checked on the loop, before the session takes its next
message); `pending_pauses` says what must still be written to the counters. Every change is
returned as an `AutomationEvent`, for the event outbox and the metrics.
"""

from __future__ import annotations

import enum
import math
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ip_pools.categories import IP_REPUTATION, Category
from ip_pools.counters import ANY_PROVIDER, Counters, pause_key


class Action(enum.StrEnum):
    SLOW = "slow"
    PAUSE = "pause"


class AutomationRuleError(ValueError):
    """A rule field is unusable; `field` names it (config adds the key path)."""

    code = "invalid_automation_rule"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


_TRIGGER = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


@dataclass(frozen=True, slots=True)
class Trigger:
    """Fire after `count` matches within `window` seconds."""

    count: int
    window: float

    @classmethod
    def parse(cls, text: str) -> Trigger:
        m = _TRIGGER.match(text) if isinstance(text, str) else None
        if not m or int(m.group(1)) < 1 or float(m.group(2)) <= 0:
            raise AutomationRuleError("trigger", f"expected N/WINDOW such as 3/10m, got {text!r}")
        return cls(int(m.group(1)), float(m.group(2)) * _UNIT[m.group(3)])

    def __str__(self) -> str:
        return f"{self.count}/{self.window:g}s"


@dataclass(frozen=True, slots=True)
class AutomationRule:
    """One `[[automation]]` entry. Matches when the pattern is found in "CODE TEXT" (if given)
    and the reply's category is one of `categories` (if given)."""

    action: Action
    duration: float
    pattern: re.Pattern[str] | None = None
    categories: frozenset[Category] = frozenset()
    trigger: Trigger | None = None
    factor: float = 0.5  # slow: the share of the shaping rate left
    steps: int = 4  # slow: recovery steps over the duration
    name: str = ""

    @classmethod
    def build(
        cls,
        action: str,
        duration: float,
        *,
        pattern: str | None = None,
        categories: Iterable[str] = (),
        trigger: str | None = None,
        factor: float = 0.5,
        steps: int = 4,
        name: str = "",
    ) -> AutomationRule:
        """Validate and compile; AutomationRuleError names the field at fault."""
        try:
            act = Action(action)
        except ValueError:
            raise AutomationRuleError("action", f"expected slow or pause, got {action!r}") from None
        if not duration > 0 or not math.isfinite(duration):
            raise AutomationRuleError("duration", "must be above 0")
        compiled = None
        if pattern is not None:
            if not pattern:
                raise AutomationRuleError("match", "must not be empty")
            try:
                compiled = re.compile(pattern, re.IGNORECASE)
            except re.error as e:
                raise AutomationRuleError("match", f"not a valid regular expression: {e}") from None
        cats: set[Category] = set()
        for c in categories:
            try:
                cats.add(Category(c))
            except ValueError:
                raise AutomationRuleError("category", f"unknown category {c!r}") from None
        if compiled is None and not cats:
            raise AutomationRuleError("match", "a rule needs a match pattern or a category")
        if not 0.0 < factor < 1.0:
            raise AutomationRuleError("factor", "must be between 0 and 1 (exclusive)")
        if steps < 1:
            raise AutomationRuleError("steps", "must be at least 1")
        trig = None if trigger is None else Trigger.parse(trigger)
        return cls(act, duration, compiled, frozenset(cats), trig, factor, steps, name)

    def matches(self, subject: str, category: Category | None) -> bool:
        if self.categories and category not in self.categories:
            return False
        return self.pattern is None or self.pattern.search(subject) is not None

    def describe(self) -> str:
        parts = [self.name] if self.name else []
        if self.pattern is not None:
            parts.append(f"match={self.pattern.pattern!r}")
        if self.categories:
            parts.append("category=" + ",".join(sorted(self.categories)))
        if self.trigger is not None:
            parts.append(f"trigger={self.trigger}")
        parts.append(f"-> {self.action} {self.duration:g}s")
        if self.action == Action.SLOW:
            parts.append(f"x{self.factor:g} in {self.steps} steps")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class AutomationEvent:
    """A change: `kind` is ip.slowed, ip.paused, ip.resumed (a pause ended or was cleared),
    ip.recovered (a slow ended) or ip.slow_step (a slow recovered one step)."""

    kind: str
    ip: str
    provider: str  # a route key, or "*" (every provider)
    at: float
    until: float | None = None
    factor: float | None = None
    reason: str = ""
    rule: int | None = None  # the rule's index, None for an operator's action
    manual: bool = False

    def data(self) -> dict[str, object]:
        """The event's JSON object for the outbox."""
        d: dict[str, object] = {"source_ip": self.ip, "provider": self.provider}
        if self.until is not None:
            d["until"] = self.until
        if self.factor is not None:
            d["factor"] = self.factor
        if self.reason:
            d["reason"] = self.reason
        if self.rule is not None:
            d["rule"] = self.rule
        if self.manual:
            d["manual"] = True
        return d


@dataclass(slots=True)
class _Slow:
    factor: float  # the lowest factor, at the start
    started: float
    until: float
    steps: int
    reason: str
    step: int = 0  # recovery steps announced so far

    def factor_at(self, now: float) -> float:
        if now >= self.until:
            return 1.0
        span = (self.until - self.started) / self.steps
        done = int((now - self.started) // span) if span > 0 else self.steps
        return self.factor + (1.0 - self.factor) * min(done, self.steps) / self.steps


@dataclass(slots=True)
class _Pause:
    until: float
    reason: str
    manual: bool = False


@dataclass(frozen=True, slots=True)
class ActiveAction:
    """A slow or pause in force, for `maildispatch pools`."""

    action: Action
    ip: str
    provider: str
    until: float
    reason: str
    factor: float | None = None
    manual: bool = False


def _reason(code: int | None, text: str) -> str:
    """A short, printable reason quoting the reply (remote text: bounded and cleaned)."""
    raw = text if code is None else f"{code} {text}"
    return "".join(c if c.isprintable() else " " for c in raw[:200])


@dataclass(slots=True)
class Automation:
    """The rules and their state for one process (see the module docstring)."""

    rules: tuple[AutomationRule, ...] = ()
    min_factor: float = 0.05
    _hits: dict[tuple[int, str, str], deque[float]] = field(default_factory=dict)
    _slows: dict[tuple[str, str], _Slow] = field(default_factory=dict)
    _pauses: dict[tuple[str, str], _Pause] = field(default_factory=dict)
    _unwritten: list[tuple[str, float]] = field(default_factory=list)

    def replace_rules(self, rules: Sequence[AutomationRule]) -> None:
        """New rules (a reload): actions in force run on; match counts start over."""
        self.rules = tuple(rules)
        self._hits.clear()

    # -- replies ---------------------------------------------------------------------------

    def observe(
        self,
        ip: str,
        provider: str,
        code: int | None,
        text: str,
        category: Category | None,
        now: float,
    ) -> list[AutomationEvent]:
        """Check one reply from `ip` to `provider` (code None: no reply) against the rules;
        the events of what fired (empty when nothing did)."""
        if not self.rules or (code is not None and code < 400):
            return []
        subject = text if code is None else f"{code} {text}"
        for i, rule in enumerate(self.rules):
            if not rule.matches(subject, category):
                continue
            if rule.trigger is not None and not self._triggered(i, rule.trigger, ip, provider, now):
                return []
            return self._fire(i, rule, ip, provider, now, _reason(code, text))
        return []

    def _triggered(self, i: int, trigger: Trigger, ip: str, provider: str, now: float) -> bool:
        hits = self._hits.get((i, ip, provider))
        if hits is None:
            hits = self._hits[(i, ip, provider)] = deque(maxlen=trigger.count)
        hits.append(now)
        if len(hits) < trigger.count or now - hits[0] > trigger.window:
            return False
        hits.clear()  # the next firing needs N fresh matches
        return True

    def _fire(
        self, i: int, rule: AutomationRule, ip: str, provider: str, now: float, reason: str
    ) -> list[AutomationEvent]:
        until = now + rule.duration
        if rule.action == Action.PAUSE:
            held = self._pauses.get((ip, provider))
            if held is not None and held.until >= until:
                return []  # already paused at least as long
            self._pauses[(ip, provider)] = _Pause(until, reason)
            self._unwritten.append((pause_key(ip, provider), until))
            return [AutomationEvent("ip.paused", ip, provider, now, until, reason=reason, rule=i)]
        slow = self._slows.get((ip, provider))
        current = slow.factor_at(now) if slow is not None else 1.0
        factor = max(self.min_factor, current * rule.factor)
        self._slows[(ip, provider)] = _Slow(factor, now, until, rule.steps, reason)
        return [
            AutomationEvent(
                "ip.slowed", ip, provider, now, until, factor=factor, reason=reason, rule=i
            )
        ]

    # -- what admission and the lanes ask --------------------------------------------------

    def paused_until(self, ip: str, provider: str, now: float) -> float:
        """When the pause of `ip` for `provider` (or for every provider) ends; 0.0 if none."""
        latest = 0.0
        for key in ((ip, provider), (ip, ANY_PROVIDER)):
            p = self._pauses.get(key)
            if p is not None and p.until > now and p.until > latest:
                latest = p.until
        return latest

    def rate_factor(self, ip: str, provider: str, now: float) -> float:
        """The share of the shaping rate `ip` may use to `provider` now (1.0: all of it)."""
        slow = self._slows.get((ip, provider))
        return 1.0 if slow is None else slow.factor_at(now)

    # -- time and operators ----------------------------------------------------------------

    def tick(self, now: float) -> list[AutomationEvent]:
        """Expire what ended and announce recovery steps; call every second or so."""
        events: list[AutomationEvent] = []
        for (ip, provider), p in list(self._pauses.items()):
            if p.until <= now:
                del self._pauses[(ip, provider)]
                events.append(
                    AutomationEvent(
                        "ip.resumed", ip, provider, now, reason="expired", manual=p.manual
                    )
                )
        for (ip, provider), s in list(self._slows.items()):
            if s.until <= now:
                del self._slows[(ip, provider)]
                events.append(AutomationEvent("ip.recovered", ip, provider, now, factor=1.0))
                continue
            span = (s.until - s.started) / s.steps
            step = int((now - s.started) // span) if span > 0 else 0
            if step > s.step:
                s.step = step
                events.append(
                    AutomationEvent(
                        "ip.slow_step", ip, provider, now, s.until, factor=s.factor_at(now)
                    )
                )
        return events

    def pause(
        self, ip: str, provider: str | None, until: float, now: float, reason: str = "operator"
    ) -> AutomationEvent:
        """An operator's pause of `ip` (for one provider, or every one when None)."""
        key = (ip, provider or ANY_PROVIDER)
        self._pauses[key] = _Pause(until, reason, manual=True)
        self._unwritten.append((pause_key(ip, provider or ANY_PROVIDER), until))
        return AutomationEvent("ip.paused", ip, key[1], now, until, reason=reason, manual=True)

    def clear(self, ip: str, provider: str | None, now: float) -> list[AutomationEvent]:
        """End pauses and slows of `ip` (for `provider`, or all of them when None) now."""
        events: list[AutomationEvent] = []
        for key in [k for k in self._pauses if k[0] == ip and provider in (None, k[1])]:
            del self._pauses[key]
            self._unwritten.append((pause_key(*key), now))
            events.append(
                AutomationEvent("ip.resumed", ip, key[1], now, reason="cleared", manual=True)
            )
        for key in [k for k in self._slows if k[0] == ip and provider in (None, k[1])]:
            del self._slows[key]
            events.append(AutomationEvent("ip.recovered", ip, key[1], now, factor=1.0, manual=True))
        return events

    def active(self, now: float) -> list[ActiveAction]:
        """Slows and pauses in force, by IP then provider."""
        out = [
            ActiveAction(Action.PAUSE, ip, prov, p.until, p.reason, manual=p.manual)
            for (ip, prov), p in self._pauses.items()
            if p.until > now
        ]
        out += [
            ActiveAction(Action.SLOW, ip, prov, s.until, s.reason, factor=s.factor_at(now))
            for (ip, prov), s in self._slows.items()
            if s.until > now
        ]
        return sorted(out, key=lambda a: (a.ip, a.provider, a.action))

    def take_unwritten(self) -> list[tuple[str, float]]:
        """Pauses (counter key, until) not yet put into the counters; clears the list."""
        out, self._unwritten = self._unwritten, []
        return out

    async def write_pauses(self, counters: Counters) -> None:
        """Put the pauses decided here into the shared counters (other processes, nodes)."""
        for key, until in self.take_unwritten():
            await counters.pause(key, until)


def retry_elsewhere(category: Category | None, attempts_elsewhere: int) -> bool:
    """Whether a refusal should be tried again at once from another IP of the same pool:
    only a blocklist or IP-reputation reply, and only once. Authentication, policy and
    content refusals are the message's or the domain's problem; another IP would only spread
    the block, so they follow the normal classification."""
    return category in IP_REPUTATION and attempts_elsewhere == 0
