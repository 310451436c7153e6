"""Prometheus metrics: outcomes by pool, source IP and platform domain; latency; queue depth;
held (ambiguous) mail."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dispatcher.telemetry.endpoint import MetricsEndpoint
from queues.protocol import ClaimedMessage, OutcomeRecord


class Metrics:
    """One registry per process, so tests and several engines do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # /readyz: name -> "ok" or why not (read from the HTTP thread: flags only, no I/O)
        self.readiness: dict[str, Callable[[], str]] = {}
        self.messages = Counter(
            "maildispatch_messages",
            "Messages by outcome, pool, source IP and platform domain",
            ["outcome", "pool", "source_ip", "platform_domain"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "maildispatch_enqueue_to_outcome_seconds",
            "Time from enqueue to the outcome of the attempt",
            ["outcome"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "maildispatch_queue_depth", "Messages not yet final", registry=self.registry
        )
        self.held = Gauge(
            "maildispatch_held_messages",
            "Messages held as ambiguous (see `maildispatch held`)",
            registry=self.registry,
        )
        self.held_released = Counter(
            "maildispatch_held_released",
            "Held messages queued again by a stream's ambiguous = release:DURATION",
            registry=self.registry,
        )
        self.sessions = Gauge(
            "maildispatch_smtp_sessions", "Open SMTP sessions", registry=self.registry
        )

        self.config = Gauge(
            "maildispatch_config_info",
            "1 for the fingerprint of the config this process runs (a fleet that diverged "
            "shows several)",
            ["fingerprint"],
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "maildispatch_config_reloads",
            "Config reloads by result (applied, rejected)",
            ["result"],
            registry=self.registry,
        )
        self.automation = Counter(
            "maildispatch_automation_actions",
            "Automation events (ip.slowed, ip.paused, ip.resumed, ...) by source IP and provider",
            ["kind", "source_ip", "provider"],
            registry=self.registry,
        )
        self._fingerprint: str | None = None

    def config_loaded(self, fingerprint: str) -> None:
        """The running config is now `fingerprint` (the previous one's series is removed)."""
        if self._fingerprint is not None and self._fingerprint != fingerprint:
            self.config.remove(self._fingerprint)
        self._fingerprint = fingerprint
        self.config.labels(fingerprint).set(1)

    def outcome(self, record: OutcomeRecord, msg: ClaimedMessage, now: float) -> None:
        state = record.state.value
        self.messages.labels(
            state, msg.pool or "", record.source_ip or "", record.platform_domain or ""
        ).inc()
        self.latency.labels(state).observe(max(0.0, now - msg.enqueued_at))

    def serve(self, listen: str) -> MetricsEndpoint:
        """Serve /metrics, /healthz and /readyz on HOST:PORT (a daemon thread)."""
        return MetricsEndpoint(self.registry, self.readiness, listen)
