"""A per-host circuit breaker: stop dialling a host that keeps refusing connections.

After `failures` consecutive connect failures a host's circuit opens: `allow()` says no for
`open_seconds`. Then it is half-open: one trial connection goes through; its success closes the
circuit, its failure opens it again for another `open_seconds`. The engine reports outcomes; the
breaker does no I/O. Only hosts with recent failures take memory (a success forgets the host).
The key is the caller's choice: the MX host name, or "address:port" to judge each address alone.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher.config import SmtpConfig
from dispatcher.errors import InvalidInput


class CircuitConfigError(InvalidInput):
    """A breaker setting is out of range; `field` names it."""

    code = "invalid_circuit_setting"


class CircuitState(enum.StrEnum):
    """What `allow()` would currently decide for a host (without consuming a trial)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Host:
    failures: int = 0
    opened_at: float | None = None
    trial_at: float | None = None  # when the half-open trial was let through


class CircuitBreaker:
    """Counts consecutive connect failures per host key and opens the circuit after `failures`."""

    def __init__(
        self,
        failures: int = SmtpConfig().circuit_failures,
        open_seconds: float = SmtpConfig().circuit_open_seconds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise CircuitConfigError(
                field="failures", reason=f"must be an integer of at least 1, got {failures!r}"
            )
        if not math.isfinite(open_seconds) or open_seconds < 0:
            raise CircuitConfigError(
                field="open_seconds", reason=f"must be a finite number >= 0, got {open_seconds!r}"
            )
        self._threshold = failures
        self._open_seconds = float(open_seconds)
        self._clock = clock
        self._hosts: dict[str, _Host] = {}

    def allow(self, host_key: str) -> bool:
        """May a connection to `host_key` be tried now? Half-open: True for one trial only."""
        st = self._hosts.get(host_key)
        if st is None or st.opened_at is None:
            return True
        now = self._clock()
        if now - st.opened_at < self._open_seconds:
            return False
        # A trial whose outcome never came back (its task died) must not block the host
        # forever: after another interval, let a new trial through.
        if st.trial_at is not None and now - st.trial_at < self._open_seconds:
            return False
        st.trial_at = now
        return True

    def failure(self, host_key: str) -> None:
        """Report a failed connection (refused, timed out, 4xx greeting) to `host_key`."""
        st = self._hosts.get(host_key)
        if st is None:
            st = self._hosts[host_key] = _Host()
        st.failures += 1
        now = self._clock()
        if st.opened_at is None:
            if st.failures >= self._threshold:
                st.opened_at = now
        elif now - st.opened_at >= self._open_seconds:
            # The half-open trial (or a straggler after the interval) failed: open again.
            # Failures of connections started before the circuit opened do not extend it.
            st.opened_at = now
            st.trial_at = None

    def success(self, host_key: str) -> None:
        """Report a working connection to `host_key`: the circuit closes and the count resets."""
        self._hosts.pop(host_key, None)

    def state(self, host_key: str) -> CircuitState:
        """The circuit's state for `host_key`, for metrics and status pages."""
        st = self._hosts.get(host_key)
        if st is None or st.opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - st.opened_at < self._open_seconds:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN
