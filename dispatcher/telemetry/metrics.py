"""Prometheus metrics: outcomes by pool, source IP and platform domain; latency; queue depth."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from queues.protocol import ClaimedMessage, OutcomeRecord


class Metrics:
    """One registry per process, so tests and several engines do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.sessions = Gauge(
            "maildispatch_smtp_sessions", "Open SMTP sessions", registry=self.registry
        )

    def outcome(self, record: OutcomeRecord, msg: ClaimedMessage, now: float) -> None:
        state = record.state.value
        self.messages.labels(
            state, msg.pool or "", record.source_ip or "", record.platform_domain or ""
        ).inc()
        self.latency.labels(state).observe(max(0.0, now - msg.enqueued_at))

    def serve(self, listen: str) -> None:
        """Serve /metrics on HOST:PORT (a daemon thread of prometheus-client)."""
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
