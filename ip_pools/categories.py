"""Reply categories as data: (SMTP code, enhanced status code, text) -> the field's category.

The vocabulary is the one KumoMTA and PowerMTA share (KumoMTA's names). A table is an ordered
list of rules, first match wins; operators' rules from config come before the defaults. The
defaults read RFC 3463 enhanced codes, and the phrases the large providers put in their replies
(blocklists, rate limits, authentication) before them, since a provider's text is more specific
than its code. Patterns are compiled once, when the table is built.

Lives in ip_pools because automation rules match categories and the pools decide what a
blocklist reply means for an IP; the engine's classifier and the bounce intake use the same
table.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class Category(enum.StrEnum):
    """Why a reply refused (or delayed) a message."""

    InvalidRecipient = "InvalidRecipient"
    DNSFailure = "DNSFailure"
    SpamBlock = "SpamBlock"  # the sender (IP, domain) is on a blocklist or has poor reputation
    SpamContent = "SpamContent"  # the message itself was judged spam
    ProhibitedAttachment = "ProhibitedAttachment"
    RelayDenied = "RelayDenied"
    AutoReply = "AutoReply"
    TransientFailure = "TransientFailure"  # try later: rate limits, greylisting, busy servers
    Subscribe = "Subscribe"
    Unsubscribe = "Unsubscribe"
    ChallengeResponse = "ChallengeResponse"
    BadConfiguration = "BadConfiguration"
    BadConnection = "BadConnection"
    BadDomain = "BadDomain"
    ContentRelated = "ContentRelated"
    InactiveMailbox = "InactiveMailbox"
    InvalidSender = "InvalidSender"
    MessageExpired = "MessageExpired"
    NoAnswerFromHost = "NoAnswerFromHost"
    PolicyRelated = "PolicyRelated"
    ProtocolErrors = "ProtocolErrors"
    QuotaIssues = "QuotaIssues"
    RelayingIssues = "RelayingIssues"
    RoutingErrors = "RoutingErrors"
    SpamRelated = "SpamRelated"
    VirusRelated = "VirusRelated"
    AuthenticationFailed = "AuthenticationFailed"
    TooManyRecipients = "TooManyRecipients"
    Uncategorized = "Uncategorized"


# Categories that say the source IP's reputation is the problem: another IP of the same pool
# may get through (see automation). Authentication, policy and content are the message's or
# the domain's problem, and another IP would only spread the block.
IP_REPUTATION = frozenset({Category.SpamBlock})

_CODE = re.compile(r"^(?:none|[245]xx|[245][0-9]x|[2-5][0-9]{2})$")
_ENHANCED = re.compile(r"^([245x])(?:\.(\d{1,3}|x)(?:\.(\d{1,3}|x))?)?$")
_REPLY_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


class CategoryRuleError(ValueError):
    """A rule field is unusable; `field` names it (config wraps this with its key path).

    The shape of `queues.errors.InvalidInput` (ip_pools may not import queues)."""

    code = "invalid_category_rule"

    def __init__(self, *, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CategoryRule:
    """One row: every given matcher must match.

    `code`: "550", "5xx", "55x" or "none" (no reply: the connection failed or timed out).
    `enhanced`: "5.7.1" exactly, "5.7" any 5.7.x, "x.1.1" either class.
    `pattern`: a regular expression searched, case-insensitively, in "CODE TEXT".
    """

    category: Category
    code: str | None = None
    enhanced: str | None = None
    pattern: re.Pattern[str] | None = None

    @classmethod
    def build(
        cls,
        category: str,
        *,
        code: str | int | None = None,
        enhanced: str | None = None,
        pattern: str | None = None,
    ) -> CategoryRule:
        """Validate and compile; CategoryRuleError names the field at fault."""
        try:
            cat = Category(category)
        except ValueError:
            raise CategoryRuleError(
                field="category",
                reason=f"unknown category {category!r}; known: {', '.join(Category)}",
            ) from None
        code_s = None if code is None else str(code).lower()
        if code_s is not None and not _CODE.match(code_s):
            raise CategoryRuleError(
                field="code", reason=f"expected 550, 5xx, 55x or none, got {code!r}"
            )
        if enhanced is not None and not _ENHANCED.match(enhanced.lower()):
            raise CategoryRuleError(
                field="enhanced", reason=f"expected 5.7.1, 5.7 or x.1.1, got {enhanced!r}"
            )
        compiled = None
        if pattern is not None:
            if not pattern:
                raise CategoryRuleError(field="match", reason="must not be empty")
            try:
                compiled = re.compile(pattern, re.IGNORECASE)
            except re.error as e:
                raise CategoryRuleError(
                    field="match", reason=f"not a valid regular expression: {e}"
                ) from None
        if code_s is None and enhanced is None and compiled is None:
            raise CategoryRuleError(
                field="match", reason="a rule needs at least one of match, code, enhanced"
            )
        return cls(cat, code_s, enhanced.lower() if enhanced else None, compiled)

    def describe(self) -> str:
        """Short human form, for `config diff` and logs."""
        parts = [f"code={self.code}"] if self.code else []
        if self.enhanced:
            parts.append(f"enhanced={self.enhanced}")
        if self.pattern is not None:
            parts.append(f"match={self.pattern.pattern!r}")
        return f"{' '.join(parts)} -> {self.category}"


def _code_matches(want: str, code: int | None) -> bool:
    if want == "none":
        return code is None
    if code is None:
        return False
    digits = f"{code:03d}"
    return all(w in ("x", d) for w, d in zip(want, digits, strict=True))


def _enhanced_matches(want: str, found: tuple[str, str, str] | None) -> bool:
    if found is None:
        return False
    return all(w in ("x", f) for w, f in zip(want.split("."), found, strict=False))


def enhanced_code(text: str) -> tuple[str, str, str] | None:
    """The RFC 3463 enhanced status code at the start of a reply's text, as its three parts."""
    m = _REPLY_ENHANCED.match(text)
    return (m.group(1), m.group(2), m.group(3)) if m else None


class CategoryTable:
    """An ordered rule table (overrides, then defaults). `classify` is a pure function."""

    __slots__ = ("overrides", "rules")

    def __init__(
        self,
        overrides: Sequence[CategoryRule] = (),
        defaults: Iterable[CategoryRule] | None = None,
    ) -> None:
        self.overrides = tuple(overrides)
        self.rules = self.overrides + tuple(DEFAULT_RULES if defaults is None else defaults)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CategoryTable) and self.rules == other.rules

    def __hash__(self) -> int:
        return hash(self.rules)

    def __repr__(self) -> str:
        return f"CategoryTable({len(self.overrides)} overrides, {len(self.rules)} rules)"

    def classify(self, code: int | None, text: str) -> Category:
        """The category of a reply (`code` None: no reply). `text` follows the code, as
        servers send it (enhanced status code first when there is one)."""
        found = enhanced_code(text)
        subject: str | None = None
        for rule in self.rules:
            if rule.code is not None and not _code_matches(rule.code, code):
                continue
            if rule.enhanced is not None and not _enhanced_matches(rule.enhanced, found):
                continue
            if rule.pattern is not None:
                if subject is None:
                    subject = text if code is None else f"{code} {text}"
                if rule.pattern.search(subject) is None:
                    continue
            return rule.category
        return Category.Uncategorized


def _r(category: Category, **kw: str) -> CategoryRule:
    return CategoryRule.build(category, **kw)


C = Category
# First match wins. Providers' phrases first (they are more precise than their codes), then
# RFC 3463 by enhanced code, then the basic reply code.
DEFAULT_RULES: tuple[CategoryRule, ...] = (
    # Authentication: the domain's SPF/DKIM/DMARC (Gmail 5.7.26, 5.7.27; Microsoft 5.7.509).
    _r(C.AuthenticationFailed, enhanced="x.7.26"),
    _r(C.AuthenticationFailed, enhanced="x.7.27"),
    _r(C.AuthenticationFailed, enhanced="x.7.509"),
    _r(C.AuthenticationFailed, enhanced="x.7.20"),
    _r(C.AuthenticationFailed, enhanced="x.7.21"),
    _r(C.AuthenticationFailed, enhanced="x.7.22"),
    _r(C.AuthenticationFailed, enhanced="x.7.23"),
    _r(C.AuthenticationFailed, enhanced="x.7.24"),
    _r(C.AuthenticationFailed, enhanced="x.7.25"),
    _r(C.AuthenticationFailed, pattern=r"\b(dmarc|spf|dkim)\b.{0,40}\b(fail|reject|policy)"),
    _r(C.AuthenticationFailed, pattern=r"unauthenticated (email|mail|sender)"),
    # Blocklists and IP reputation: another IP may get through.
    _r(
        C.SpamBlock,
        pattern=(
            r"spamhaus|spamcop|barracuda|sorbs|\bsurbl\b|uceprotect|blocked using|"
            r"black ?list|block ?list|\b(dns|r)bl\b|listed (at|in|on|by)|poor reputation|"
            r"(ip|sender|sending) reputation|reputation of (your|the sending)|"
            r"banned sending ip|client host \S+ blocked|\bS3140\b|\bRP-00\d\b"
        ),
    ),
    # Rate limits and greylisting: the same IP later, more slowly.
    _r(
        C.TransientFailure,
        pattern=(
            r"\b4\.7\.28\b|rate.?limit|too many (messages|connections|emails|mails)|"
            r"throttl|try (again )?later|greylist|graylist|temporarily deferred|\bTSS0\d\b"
        ),
    ),
    _r(C.SpamContent, pattern=r"\bspam\b|junk mail|unsolicited|\bUCE\b|looks like spam"),
    _r(C.VirusRelated, pattern=r"\bvirus\b|malware|infected"),
    _r(C.ProhibitedAttachment, pattern=r"attachment.{0,30}(not allowed|prohibited|blocked)"),
    _r(C.QuotaIssues, pattern=r"over ?quota|quota exceeded|mailbox (is )?full|out of storage"),
    _r(
        C.InactiveMailbox,
        pattern=r"(mailbox|account|user|address) (has been |is )?(disabled|inactive|suspended)",
    ),
    _r(
        C.InvalidRecipient,
        pattern=(
            r"(no such|unknown|invalid|bad) (user|mailbox|recipient|address|account)|"
            r"(user|mailbox|recipient|address) (unknown|not found|does not exist|doesn't exist)"
        ),
    ),
    _r(C.RelayDenied, pattern=r"relay(ing)? (access )?(denied|not permitted|prohibited)"),
    # RFC 3463, subject and detail.
    _r(C.InvalidRecipient, enhanced="x.1.1"),
    _r(C.BadDomain, enhanced="x.1.2"),
    _r(C.InvalidRecipient, enhanced="x.1.3"),
    _r(C.InvalidRecipient, enhanced="x.1.4"),
    _r(C.InvalidRecipient, enhanced="x.1.6"),
    _r(C.InvalidSender, enhanced="x.1.7"),
    _r(C.InvalidSender, enhanced="x.1.8"),
    _r(C.BadDomain, enhanced="x.1.10"),
    _r(C.InactiveMailbox, enhanced="x.2.1"),
    _r(C.QuotaIssues, enhanced="x.2.2"),
    _r(C.ContentRelated, enhanced="x.2.3"),
    _r(C.ContentRelated, enhanced="x.3.4"),
    _r(C.BadConfiguration, enhanced="x.3.5"),
    _r(C.NoAnswerFromHost, enhanced="x.4.1"),
    _r(C.BadConnection, enhanced="x.4.2"),
    _r(C.RoutingErrors, enhanced="x.4.3"),
    _r(C.RoutingErrors, enhanced="x.4.4"),
    _r(C.TransientFailure, enhanced="x.4.5"),
    _r(C.RoutingErrors, enhanced="x.4.6"),
    _r(C.MessageExpired, enhanced="x.4.7"),
    _r(C.TooManyRecipients, enhanced="x.5.3"),
    _r(C.ProtocolErrors, enhanced="x.5"),
    _r(C.ContentRelated, enhanced="x.6"),
    _r(C.RelayDenied, enhanced="x.7.1", pattern=r"relay"),
    _r(C.PolicyRelated, enhanced="x.7"),
    _r(C.QuotaIssues, enhanced="x.3.1"),
    _r(C.InvalidRecipient, enhanced="x.1"),
    _r(C.InactiveMailbox, enhanced="x.2"),
    _r(C.TransientFailure, enhanced="4.3"),
    _r(C.BadConfiguration, enhanced="5.3"),
    _r(C.RoutingErrors, enhanced="x.4"),
    # No reply at all: the connection failed, was cut, or timed out.
    _r(C.NoAnswerFromHost, code="none", pattern=r"time(d)? ?out"),
    _r(C.BadConnection, code="none"),
    # The basic reply code alone.
    _r(C.QuotaIssues, code="452"),
    _r(C.QuotaIssues, code="552"),
    _r(C.InvalidRecipient, code="550", pattern=r"mailbox|recipient|user"),
    _r(C.InvalidRecipient, code="551"),
    _r(C.InvalidRecipient, code="553"),
    _r(C.TransientFailure, code="421"),
    _r(C.TransientFailure, code="4xx"),
    _r(C.PolicyRelated, code="554"),
    _r(C.ProtocolErrors, code="50x"),
)
