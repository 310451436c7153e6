"""Reply categories (ip_pools.categories): the default table, overrides from config, and the
category each decision carries."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.config import ConfigError, parse_config
from dispatcher.engine.outcomes import Classifier, Verdict
from dispatcher.smtp.session import Phase, SendResult
from ip_pools.categories import Category, CategoryRule, CategoryRuleError, CategoryTable

REPO = Path(__file__).resolve().parents[3]
TABLE = CategoryTable()


@pytest.mark.parametrize(
    ("code", "text", "category"),
    [
        (550, "5.1.1 <a@b.example>: Recipient address rejected: User unknown", "InvalidRecipient"),
        (550, "5.1.2 bad destination system address", "BadDomain"),
        (552, "5.2.2 The email account that you tried to reach is over quota", "QuotaIssues"),
        (550, "5.2.1 The email account that you tried to reach is disabled", "InactiveMailbox"),
        (
            550,
            "5.7.1 Service unavailable; Client host [198.51.100.7] blocked using "
            "Spamhaus. To request removal from this list see https://www.spamhaus.org/",
            "SpamBlock",
        ),
        (
            550,
            "5.7.606 Access denied, banned sending IP [198.51.100.7]. (S3140)",
            "SpamBlock",
        ),
        (
            421,
            "4.7.28 Our system has detected an unusual rate of unsolicited mail originating "
            "from your IP address. To protect our users from spam, mail sent from your IP "
            "address has been temporarily rate limited.",
            "TransientFailure",
        ),
        (
            550,
            "5.7.26 This mail is unauthenticated, which poses a security risk to the sender "
            "and Gmail users, and has been blocked.",
            "AuthenticationFailed",
        ),
        (
            550,
            "5.7.509 Access denied, sending domain example.com does not pass DMARC",
            "AuthenticationFailed",
        ),
        (550, "5.7.27 Sender address has null MX", "AuthenticationFailed"),
        (554, "5.7.1 Message rejected as spam by Content Filtering", "SpamContent"),
        (554, "5.7.1 Relay access denied", "RelayDenied"),
        (550, "5.7.1 Message refused by local policy", "PolicyRelated"),
        (451, "4.7.1 Greylisted, please try again in 300 seconds", "TransientFailure"),
        (451, "4.3.0 Temporary server error", "TransientFailure"),
        (554, "5.4.7 Delivery time expired", "MessageExpired"),
        (None, "connection refused", "BadConnection"),
        (None, "timed out waiting for the greeting", "NoAnswerFromHost"),
        (421, "Service not available, closing transmission channel", "TransientFailure"),
        (554, "no SMTP service here", "PolicyRelated"),
        (299, "odd", "Uncategorized"),
    ],
)
def test_default_table(code: int | None, text: str, category: str) -> None:
    assert TABLE.classify(code, text) == Category(category)


def test_every_default_rule_is_reachable() -> None:
    """A default rule shadowed by an earlier, broader one would be dead data."""
    rules = TABLE.rules
    for i, rule in enumerate(rules):
        if rule.pattern is None and rule.code is None:
            # An enhanced-only rule: shadowed when an earlier enhanced-only rule is a prefix.
            assert rule.enhanced is not None
            for earlier in rules[:i]:
                if earlier.pattern is None and earlier.code is None and earlier.enhanced:
                    e, r = earlier.enhanced.split("."), rule.enhanced.split(".")
                    covers = all(a in ("x", b) for a, b in zip(e, r, strict=False))
                    prefix = len(e) <= len(r) and covers
                    assert not prefix, f"{rule.describe()} shadowed by {earlier.describe()}"


def test_override_comes_first_and_defaults_stay() -> None:
    table = CategoryTable([CategoryRule.build("SpamBlock", pattern=r"\bS3150\b")])
    assert table.classify(550, "5.7.1 Unfortunately, messages from x weren't sent (S3150)") == (
        Category.SpamBlock
    )
    assert table.classify(550, "5.1.1 User unknown") == Category.InvalidRecipient


def test_override_by_code_and_enhanced() -> None:
    table = CategoryTable(
        [
            CategoryRule.build(
                "TransientFailure", code="5xx", enhanced="5.7.1", pattern="greylist"
            ),
            CategoryRule.build("InactiveMailbox", code=550, enhanced="x.1.1"),
        ]
    )
    assert table.classify(550, "5.7.1 greylisted") == Category.TransientFailure
    assert table.classify(450, "4.7.1 greylisted") == Category.TransientFailure  # the default
    assert table.classify(550, "5.1.1 no") == Category.InactiveMailbox
    assert table.classify(551, "5.1.1 no") == Category.InvalidRecipient


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"category": "Nope", "pattern": "x"}, "category"),
        ({"category": "SpamBlock", "pattern": "("}, "match"),
        ({"category": "SpamBlock", "code": "5x"}, "code"),
        ({"category": "SpamBlock", "enhanced": "5.7.1.2"}, "enhanced"),
        ({"category": "SpamBlock"}, "match"),
    ],
)
def test_bad_rules_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    category = kwargs.pop("category")
    with pytest.raises(CategoryRuleError) as err:
        CategoryRule.build(category, **kwargs)
    assert err.value.field == field


def _raw() -> dict[str, Any]:
    return tomllib.loads((REPO / "config.toml").read_text())


def test_config_overrides_are_compiled_into_the_table() -> None:
    raw = _raw()
    raw["categories"] = [
        {"category": "SpamBlock", "match": "blocked by the gnomes"},
        {"category": "QuotaIssues", "code": 452, "enhanced": "4.2"},
    ]
    config = parse_config(raw, base_dir=REPO)
    assert len(config.categories.overrides) == 2
    assert config.categories.classify(550, "5.7.1 BLOCKED by the gnomes") == Category.SpamBlock
    assert config.categories.classify(452, "4.2.0 busy") == Category.QuotaIssues
    assert config.categories.rules[2:] == CategoryTable().rules


@pytest.mark.parametrize(
    ("entry", "key_path"),
    [
        ({"category": "Bogus", "match": "x"}, "categories[0].category"),
        ({"category": "SpamBlock", "match": "(unclosed"}, "categories[0].match"),
        ({"category": "SpamBlock", "code": True}, "categories[0].code"),
        ({"category": "SpamBlock", "code": "6xx"}, "categories[0].code"),
        ({"category": "SpamBlock", "match": "x", "extra": 1}, "categories[0].extra"),
        ({"match": "x"}, "categories[0].category"),
    ],
)
def test_config_errors_name_the_key_path(entry: dict[str, Any], key_path: str) -> None:
    raw = _raw()
    raw["categories"] = [entry]
    with pytest.raises(ConfigError) as err:
        parse_config(raw, base_dir=REPO)
    assert err.value.key_path == key_path


def test_decisions_carry_the_category() -> None:
    classifier = Classifier(retry_schedule=(60.0,))
    blocked = SendResult(Phase.RCPT, 550, "5.7.1 blocked using Spamhaus")
    d = classifier.decide(blocked, 0, 0.0)
    assert (d.verdict, d.category) == (Verdict.DEFERRED, Category.SpamBlock)
    unknown = SendResult(Phase.RCPT, 550, "5.1.1 user unknown")
    assert classifier.decide(unknown, 0, 0.0).category == Category.InvalidRecipient
    delivered = SendResult(Phase.DOT, 250, "2.0.0 ok", dot_written=True)
    assert classifier.decide(delivered, 0, 0.0).category is None
    released = SendResult(Phase.MARK, None, "released: shutting down")
    assert classifier.decide(released, 0, 0.0).category is None
    lost = SendResult(Phase.DOT, None, "connection lost", dot_written=True)
    d = classifier.decide(lost, 0, 0.0)
    assert (d.verdict, d.category) == (Verdict.AMBIGUOUS, Category.BadConnection)


def test_classifier_uses_the_configured_table() -> None:
    table = CategoryTable([CategoryRule.build("SpamBlock", pattern="gnomes")])
    c = Classifier(categories=table)
    assert c.decide(SendResult(Phase.MAIL, 550, "5.7.1 gnomes"), 0, 0.0).category == (
        Category.SpamBlock
    )


@given(st.none() | st.integers(min_value=0, max_value=999), st.text(max_size=200))
def test_any_reply_gets_exactly_one_category(code: int | None, text: str) -> None:
    assert TABLE.classify(code, text) in set(Category)
