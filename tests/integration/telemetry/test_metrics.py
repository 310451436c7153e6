"""Prometheus metrics: outcomes counted by pool, source IP and platform domain, served over HTTP."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

import pytest

from tests.support.engine import DEST, RuntimeFactory, make_config, payload
from tests.support.smtp_server import ServerFactory


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metrics-keys")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_outcomes_are_counted_and_served(
    tmp_path: Path, key_dir: Path, smtp_server: ServerFactory, open_runtime: RuntimeFactory
) -> None:
    sink = await smtp_server()
    config = make_config(tmp_path, routes={DEST: f"127.0.0.1:{sink.port}"}, key_dir=key_dir)
    rt = await open_runtime(config)
    await rt.enqueue([payload(i) for i in range(6)])
    await rt.run(drain=True)
    reg = rt.metrics.registry
    total = sum(
        reg.get_sample_value(
            "maildispatch_messages_total",
            {
                "outcome": "delivered",
                "pool": "main",
                "source_ip": "127.0.0.2",
                "platform_domain": d,
            },
        )
        or 0
        for d in ("send1.platform.example", "send2.platform.example")
    )
    assert total == 6
    port = free_port()
    rt.metrics.serve(f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    assert b'maildispatch_messages_total{outcome="delivered"' in body
    assert b"maildispatch_enqueue_to_outcome_seconds_bucket" in body


def _get(url: str) -> tuple[int, bytes]:
    import urllib.error

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


async def test_healthz_and_readyz_on_the_metrics_port() -> None:
    import json

    from dispatcher.telemetry.metrics import Metrics

    metrics = Metrics()
    state = {"redis": "ok"}
    metrics.readiness["queue"] = lambda: "ok"
    metrics.readiness["redis"] = lambda: state["redis"]
    endpoint = metrics.serve("127.0.0.1:0")
    base = f"http://127.0.0.1:{endpoint.port}"
    try:
        code, body = await asyncio.to_thread(_get, base + "/healthz")
        assert code == 200 and json.loads(body)["status"] == "ok"
        code, body = await asyncio.to_thread(_get, base + "/readyz")
        assert code == 200 and json.loads(body)["checks"] == {"queue": "ok", "redis": "ok"}
        state["redis"] = "unavailable"
        code, body = await asyncio.to_thread(_get, base + "/readyz")
        assert code == 503
        assert json.loads(body) == {
            "status": "unavailable",
            "checks": {"queue": "ok", "redis": "unavailable"},
        }
        code, body = await asyncio.to_thread(_get, base + "/metrics")
        assert code == 200 and b"maildispatch_queue_depth" in body
        assert (await asyncio.to_thread(_get, base + "/nothing"))[0] == 404
    finally:
        endpoint.close()
