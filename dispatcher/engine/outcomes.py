"""Reply classification as data: (phase, reply code, enhanced status code) -> verdict.

Defaults follow RFC 3463: 5.1.x is the recipient (bounce, suppress); 5.7.x, and 5xx to the
greeting, EHLO or MAIL, are the sender's, IP's or content's problem (never a recipient bounce:
defer, move IP, raise an event). A missing reply after the final dot is ambiguous.

Every decision also carries the reply's category (ip_pools.categories: the field's
vocabulary, a table of its own with overrides from config); a delivery or a released message
has none.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

from dispatcher.config import Config, DispatchConfig
from dispatcher.smtp.session import Phase, SendResult
from ip_pools.categories import Category, CategoryTable

_DISPATCH = DispatchConfig()  # the defaults of the retry schedule and attempt limit


class Verdict(enum.StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"
    RELEASED = "released"  # never attempted (lease lost, shutting down): back to the queue


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table. `phases` empty = any phase; `enhanced` is a prefix like "5.1."."""

    verdict: Verdict
    reply: str = "any"  # "none" (no reply), "2xx", "4xx", "5xx" or "any"
    phases: frozenset[Phase] = frozenset()
    enhanced: str | None = None
    code: int | None = None
    suppress: bool = False  # add the recipient to the suppression list
    sender_problem: bool = False  # IP/domain/content reputation: raise an event, try another IP


_BEFORE_DOT = frozenset(
    {Phase.CONNECT, Phase.GREETING, Phase.EHLO, Phase.STARTTLS, Phase.MAIL, Phase.RCPT, Phase.DATA}
)
_SENDER_PHASES = frozenset({Phase.GREETING, Phase.EHLO, Phase.MAIL})

# First match wins. Order: specific before general.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(Verdict.RELEASED, "any", frozenset({Phase.MARK})),
    Rule(Verdict.DELIVERED, "2xx", frozenset({Phase.DOT})),
    Rule(Verdict.AMBIGUOUS, "none", frozenset({Phase.DOT})),
    Rule(Verdict.DEFERRED, "none", _BEFORE_DOT),
    Rule(Verdict.FAILED, "5xx", frozenset({Phase.LOCAL})),
    Rule(Verdict.DEFERRED, "4xx", enhanced="4.7.", sender_problem=True),
    Rule(Verdict.DEFERRED, "4xx"),
    Rule(Verdict.DEFERRED, "5xx", enhanced="5.7.", sender_problem=True),
    Rule(Verdict.DEFERRED, "5xx", _SENDER_PHASES, sender_problem=True),
    Rule(Verdict.BOUNCED, "5xx", enhanced="5.1.", suppress=True),
    Rule(Verdict.BOUNCED, "5xx", enhanced="5.2.1", suppress=True),  # mailbox disabled
    Rule(Verdict.BOUNCED, "5xx", enhanced="5.2."),  # mailbox full, message too big for it
    Rule(Verdict.BOUNCED, "5xx", frozenset({Phase.RCPT}), code=550, suppress=True),
    Rule(Verdict.BOUNCED, "5xx", frozenset({Phase.RCPT}), code=551, suppress=True),
    Rule(Verdict.FAILED, "5xx"),
    # Anything else (odd codes such as 3xx where a final reply was expected): retry later.
    Rule(Verdict.DEFERRED),
)


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    rule: Rule
    retry_at: float | None = None
    category: Category | None = None


class Classifier:
    """Turns a SendResult into a Decision using a rule table and a retry schedule."""

    def __init__(
        self,
        rules: Sequence[Rule] = DEFAULT_RULES,
        retry_schedule: Sequence[float] = _DISPATCH.retry_schedule,
        max_attempts: int = _DISPATCH.max_attempts,
        jitter: float = 0.1,
        rng: random.Random | None = None,
        categories: CategoryTable | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self.categories = categories if categories is not None else CategoryTable()
        self.schedule = tuple(retry_schedule) or (60.0,)
        self.max_attempts = max_attempts
        self.jitter = jitter
        self._rng = rng or random.Random()

    @classmethod
    def from_config(cls, config: Config) -> Classifier:
        """The classifier of `[dispatch]` (retry schedule, attempt limit) and `[[categories]]`."""
        d = config.dispatch
        return cls(
            retry_schedule=d.retry_schedule,
            max_attempts=d.max_attempts,
            categories=config.categories,
        )

    def rule_for(self, result: SendResult) -> Rule:
        code = result.code
        reply = "none" if code is None else f"{code // 100}xx"
        enhanced = result.enhanced or ""
        for rule in self.rules:
            if rule.phases and result.phase not in rule.phases:
                continue
            if rule.reply != "any" and rule.reply != reply:
                continue
            if rule.enhanced is not None and not enhanced.startswith(rule.enhanced):
                continue
            if rule.code is not None and rule.code != code:
                continue
            return rule
        return self.rules[-1]

    def backoff(self, attempt: int) -> float:
        """Delay before the next try after `attempt` (1-based) tries, with jitter."""
        base = self.schedule[min(attempt, len(self.schedule)) - 1]
        return base * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def category(self, result: SendResult, verdict: Verdict) -> Category | None:
        """The reply's category; None for a delivery or a message never attempted."""
        if verdict in (Verdict.DELIVERED, Verdict.RELEASED):
            return None
        return self.categories.classify(result.code, result.text)

    def decide(self, result: SendResult, attempts_before: int, now: float) -> Decision:
        """Verdict for this attempt; deferrals past max_attempts become failures."""
        rule = self.rule_for(result)
        verdict = rule.verdict
        category = self.category(result, verdict)
        if verdict == Verdict.DEFERRED:
            attempt = attempts_before + 1
            if attempt >= self.max_attempts:
                return Decision(Verdict.FAILED, rule, category=category)
            return Decision(verdict, rule, now + self.backoff(attempt), category)
        return Decision(verdict, rule, category=category)
