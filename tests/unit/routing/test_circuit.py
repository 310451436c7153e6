"""CircuitBreaker: opens after N consecutive failures, half-opens after the interval."""

from __future__ import annotations

import pytest

from dispatcher.routing.circuit import CircuitBreaker, CircuitConfigError, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def opened(clock: Clock, failures: int = 3, open_seconds: float = 30.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failures=failures, open_seconds=open_seconds, clock=clock)
    for _ in range(failures):
        breaker.failure("mx.test")
    return breaker


def test_opens_after_n_consecutive_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, open_seconds=30, clock=clock)
    breaker.failure("mx.test")
    breaker.failure("mx.test")
    assert breaker.allow("mx.test")
    assert breaker.state("mx.test") is CircuitState.CLOSED

    breaker.failure("mx.test")

    assert not breaker.allow("mx.test")
    assert breaker.state("mx.test") is CircuitState.OPEN
    assert breaker.allow("other.test")  # hosts are independent


def test_a_success_resets_the_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, clock=clock)
    breaker.failure("mx.test")
    breaker.failure("mx.test")
    breaker.success("mx.test")
    breaker.failure("mx.test")
    breaker.failure("mx.test")
    assert breaker.allow("mx.test")


def test_half_opens_after_the_interval_for_one_trial() -> None:
    clock = Clock()
    breaker = opened(clock, open_seconds=30)
    clock.now += 29.9
    assert not breaker.allow("mx.test")

    clock.now += 0.1
    assert breaker.state("mx.test") is CircuitState.HALF_OPEN
    assert breaker.allow("mx.test")  # the trial
    assert not breaker.allow("mx.test")  # only one at a time


def test_a_successful_trial_closes_the_circuit() -> None:
    clock = Clock()
    breaker = opened(clock, failures=2)
    clock.now += 30
    assert breaker.allow("mx.test")

    breaker.success("mx.test")

    assert breaker.state("mx.test") is CircuitState.CLOSED
    assert all(breaker.allow("mx.test") for _ in range(5))
    breaker.failure("mx.test")  # the count starts again from zero
    assert breaker.allow("mx.test")


def test_a_failed_trial_opens_the_circuit_again() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 30
    assert breaker.allow("mx.test")

    breaker.failure("mx.test")

    assert not breaker.allow("mx.test")
    clock.now += 29
    assert not breaker.allow("mx.test")
    clock.now += 1
    assert breaker.allow("mx.test")


def test_a_trial_that_never_reports_does_not_block_forever() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 30
    assert breaker.allow("mx.test")  # its task dies without a report
    clock.now += 29
    assert not breaker.allow("mx.test")
    clock.now += 1
    assert breaker.allow("mx.test")


def test_late_failures_of_older_connections_do_not_extend_the_open_time() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 20
    breaker.failure("mx.test")  # a connection started before the circuit opened
    clock.now += 10
    assert breaker.allow("mx.test")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"failures": 0}, "failures"),
        ({"failures": True}, "failures"),
        ({"open_seconds": -1.0}, "open_seconds"),
        ({"open_seconds": float("inf")}, "open_seconds"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(CircuitConfigError) as info:
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
