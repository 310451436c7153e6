"""`[metrics]`: where the Prometheus endpoint listens (off when empty)."""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.config.table import Section, Table
from dispatcher.config.values import parse_route


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = ""  # HOST:PORT


SECTION = Section("metrics", ("listen",))


def parse_metrics(t: Table) -> MetricsConfig:
    metrics = MetricsConfig(listen=t.text("listen", MetricsConfig().listen))
    if metrics.listen:
        parse_route(metrics.listen, "metrics.listen")
    t.done()
    return metrics
