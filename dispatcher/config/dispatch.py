"""`[dispatch]`: the engine's batch sizes, concurrency, intervals and retry schedule."""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table
from dispatcher.config.values import parse_duration


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    claim_batch: int = 500
    max_sessions: int = 100
    sessions_per_host: int = 20
    messages_per_session: int = 200
    max_message_bytes: int = 10 * 1024 * 1024
    mark_interval: float = 0.0  # 0: group commit without a fixed wait
    outcome_interval: float = 0.02
    poll_interval: float = 0.5
    shutdown_timeout: float = 30.0
    max_attempts: int = 30
    # Delay after the 1st, 2nd, ... deferral; the last step repeats.
    retry_schedule: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
    # Sessions to one resolved MX address, across every source IP and recipient domain
    # (names are free: many hostile domains can point at one tarpit)...
    sessions_per_mx_address: int = 50
    # ... and at most this share of max_sessions, so one address never holds them all.
    mx_address_share: float = 0.5
    # Claims pause while the oldest outcome not yet written is older than this.
    max_outcome_age: float = 5.0
    # Admission: how long mail may wait in memory for its provider to admit it before it goes
    # back to the store with its due time (no attempt counted), and the most messages one
    # provider's ready queue holds (fewer for a throttled one: its rate times admission_wait).
    admission_wait: float = 5.0
    ready_max: int = 1000

    @property
    def mx_address_cap(self) -> int:
        """Sessions one MX address may hold: both limits applied, at least one."""
        share = int(self.mx_address_share * self.max_sessions)
        return max(1, min(self.sessions_per_mx_address, share))


SECTION = Section(
    "dispatch",
    (
        "claim_batch",
        "max_sessions",
        "sessions_per_host",
        "messages_per_session",
        "max_message_bytes",
        "mark_interval",
        "outcome_interval",
        "poll_interval",
        "shutdown_timeout",
        "max_attempts",
        "retry_schedule",
        "sessions_per_mx_address",
        "mx_address_share",
        "max_outcome_age",
        "admission_wait",
        "ready_max",
    ),
)


def parse_dispatch(t: Table) -> DispatchConfig:
    base = DispatchConfig()
    sched_raw = t.raw("retry_schedule", list(base.retry_schedule))
    if not isinstance(sched_raw, list) or not sched_raw:
        raise ConfigError(
            field="dispatch.retry_schedule", reason="expected a non-empty list of durations"
        )
    dispatch = DispatchConfig(
        claim_batch=t.integer("claim_batch", base.claim_batch, minimum=1),
        max_sessions=t.integer("max_sessions", base.max_sessions, minimum=1),
        sessions_per_host=t.integer("sessions_per_host", base.sessions_per_host, minimum=1),
        messages_per_session=t.integer(
            "messages_per_session", base.messages_per_session, minimum=1
        ),
        max_message_bytes=t.integer("max_message_bytes", base.max_message_bytes, minimum=1024),
        mark_interval=t.duration("mark_interval", base.mark_interval),
        outcome_interval=t.duration("outcome_interval", base.outcome_interval),
        poll_interval=t.duration("poll_interval", base.poll_interval),
        shutdown_timeout=t.duration("shutdown_timeout", base.shutdown_timeout),
        max_attempts=t.integer("max_attempts", base.max_attempts, minimum=1),
        retry_schedule=tuple(
            parse_duration(v, f"dispatch.retry_schedule[{i}]") for i, v in enumerate(sched_raw)
        ),
        sessions_per_mx_address=t.integer(
            "sessions_per_mx_address", base.sessions_per_mx_address, minimum=1
        ),
        mx_address_share=t.number("mx_address_share", base.mx_address_share),
        max_outcome_age=t.duration("max_outcome_age", base.max_outcome_age),
        admission_wait=t.duration("admission_wait", base.admission_wait),
        ready_max=t.integer("ready_max", base.ready_max, minimum=1),
    )
    if not 0.0 < dispatch.mx_address_share <= 1.0:
        raise ConfigError(field="dispatch.mx_address_share", reason="must be above 0 and at most 1")
    if dispatch.max_outcome_age <= 0.0:
        raise ConfigError(field="dispatch.max_outcome_age", reason="must be above 0")
    t.done()
    return dispatch
