"""Properties of the reply classifier (dispatcher/outcomes.py) over any SMTP reply."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.engine.outcomes import Classifier, Verdict
from dispatcher.smtp.session import Phase, SendResult

ALL_PHASES = (
    Phase.CONNECT, Phase.GREETING, Phase.EHLO, Phase.STARTTLS, Phase.MAIL, Phase.RCPT,
    Phase.DATA, Phase.MARK, Phase.DOT, Phase.LOCAL,
)  # fmt: skip
BEFORE_DOT = tuple(p for p in ALL_PHASES if p != Phase.DOT)
NOW = 1_000_000.0

codes = st.none() | st.integers(min_value=100, max_value=699)
free_text = st.text(max_size=40)


def enhanced(
    cls: st.SearchStrategy[int], subject: st.SearchStrategy[int]
) -> st.SearchStrategy[str]:
    """Reply text starting with an RFC 3463 enhanced status code, then anything."""
    return st.builds(
        lambda c, s, d, rest: f"{c}.{s}.{d} {rest}",
        cls,
        subject,
        st.integers(min_value=0, max_value=999),
        free_text,
    )


any_text = free_text | enhanced(st.sampled_from([2, 4, 5]), st.integers(min_value=0, max_value=999))


def results(
    phases: tuple[str, ...] = ALL_PHASES,
    code: st.SearchStrategy[int | None] = codes,
    text: st.SearchStrategy[str] = any_text,
) -> st.SearchStrategy[SendResult]:
    return st.builds(
        SendResult,
        phase=st.sampled_from(phases),
        code=code,
        text=text,
        dot_written=st.booleans(),
        reusable=st.booleans(),
    )


classifier = Classifier(retry_schedule=(60.0, 300.0), max_attempts=30)
attempts = st.integers(min_value=0, max_value=100)


@given(results(), attempts)
def test_any_reply_gets_exactly_one_verdict(result: SendResult, before: int) -> None:
    d = classifier.decide(result, before, NOW)
    assert isinstance(d.verdict, Verdict)
    assert classifier.decide(result, before, NOW).verdict == d.verdict  # no hidden state
    # A retry time exactly when the message waits for another try, and in the future.
    assert (d.retry_at is not None) == (d.verdict == Verdict.DEFERRED)
    assert d.retry_at is None or d.retry_at > NOW


@given(results((Phase.DOT,), st.integers(min_value=200, max_value=299)), attempts)
def test_2xx_after_the_dot_is_always_delivered(result: SendResult, before: int) -> None:
    assert classifier.decide(result, before, NOW).verdict == Verdict.DELIVERED


@given(
    results(
        (Phase.RCPT,),
        st.integers(min_value=500, max_value=599),
        enhanced(st.just(5), st.just(1)),
    ),
    attempts,
)
def test_5_1_x_at_rcpt_is_never_retried(result: SendResult, before: int) -> None:
    d = classifier.decide(result, before, NOW)
    assert d.verdict in (Verdict.BOUNCED, Verdict.FAILED)
    assert d.retry_at is None


@given(results(text=enhanced(st.just(5), st.just(7))), attempts)
def test_5_7_x_never_suppresses_the_recipient(result: SendResult, before: int) -> None:
    assert not classifier.rule_for(result).suppress
    assert classifier.decide(result, before, NOW).verdict != Verdict.BOUNCED


@given(results((Phase.DOT,), st.none()), attempts)
def test_no_reply_after_the_dot_is_always_ambiguous(result: SendResult, before: int) -> None:
    assert classifier.decide(result, before, NOW).verdict == Verdict.AMBIGUOUS


@given(results(BEFORE_DOT), attempts)
def test_failures_before_the_dot_are_never_ambiguous(result: SendResult, before: int) -> None:
    assert classifier.decide(result, before, NOW).verdict != Verdict.AMBIGUOUS
