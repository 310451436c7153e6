"""The maildispatch engine as a scenario's dispatcher: enqueue N standard messages, then drain.

The configuration is built in code (no file): a fresh queue in a temporary folder (or a
fresh PostgreSQL database), one RSA-2048 author key created on first use, one pool of three
source IPs (127.0.0.2-4) whose platform domain does not sign, and a route sending the bench
recipient domain to the sink.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import cpu_now, measured, phase, write_enqueue_times
from bench.message import AUTHOR_DOMAIN, RCPT_DOMAIN, SENDER, body_text, recipient
from bench.spec import SOURCE_IPS, WorkerResult, WorkerSpec

ACCOUNT = "bench"
PLATFORM_DOMAIN = "send.bench-platform.example"
ENQUEUE_BATCH = 1000


def config_dict(spec: WorkerSpec, state: Path) -> dict[str, Any]:
    """The engine configuration for one run (the product's defaults unless said here)."""
    queue: dict[str, Any] = {"backend": spec.backend}
    if spec.backend == "postgres":
        queue["dsn"] = spec.dsn
    else:
        queue["path"] = str(state / "queue.db")
    return {
        "state_dir": str(state),
        "queue": queue,
        "dispatch": {
            "max_sessions": spec.max_sessions,
            "sessions_per_host": spec.sessions_per_host,
            # The one sink stands for a provider's many MX addresses: no cap per address.
            "sessions_per_mx_address": spec.max_sessions,
            "mx_address_share": 1.0,
        },
        "smtp": {"starttls": "opportunistic" if spec.tls else "never", "mark_at": spec.mark_at},
        "verp": {"secret_file": str(state / "verp.key")},
        "dkim": {
            "create_missing": True,
            "keys": [
                {
                    "domain": AUTHOR_DOMAIN,
                    "selector": "bench",
                    "file": str(state / f"{AUTHOR_DOMAIN}.bench.pem"),
                }
            ],
        },
        "accounts": [{"name": ACCOUNT, "author_domains": [AUTHOR_DOMAIN], "pool": "bench"}],
        "pools": [
            {
                "name": "bench",
                "ips": [
                    {"address": ip, "ehlo": f"mta{i + 1}.bench-platform.example", "weight": 1}
                    for i, ip in enumerate(SOURCE_IPS)
                ],
                # Author signature only: the platform's second signature is off.
                "domains": [{"domain": PLATFORM_DOMAIN, "sign": False}],
            }
        ],
        "routes": {RCPT_DOMAIN: f"{spec.host}:{spec.port}"},
    }


def payloads(spec: WorkerSpec, start: int, stop: int, text: str) -> list[dict[str, Any]]:
    return [
        {
            "account": ACCOUNT,
            "idempotency_key": f"bench-{spec.run_id}-{i}",
            "from": f"Bench Sender <{SENDER}>",
            "to": recipient(i),
            "subject": f"Benchmark message {i}",
            "text": text,
            "stream": "transactional",
        }
        for i in range(start, stop)
    ]


async def _open(spec: WorkerSpec) -> Any:
    from dispatcher.config import parse_config
    from dispatcher.engine.runtime import Runtime

    state = Path(spec.workdir)
    os.makedirs(state, exist_ok=True)  # once, before the loop has work: not worth a thread
    config = parse_config(config_dict(spec, state), base_dir=state)
    return await Runtime.open(config)


def _helpers(spec: WorkerSpec) -> list[subprocess.Popen[bytes]]:
    """Extra engine processes (multi-process scenarios); they only drain."""
    helper = WorkerSpec(**{**_as_dict(spec), "role": "helper", "profile": "", "enqueue_path": ""})
    return [
        subprocess.Popen(
            [sys.executable, "-m", "bench.worker", helper.to_json()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(spec.processes - 1)
    ]


def _as_dict(spec: WorkerSpec) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(spec)


async def run_engine(spec: WorkerSpec, result: WorkerResult) -> None:
    """Enqueue (timed separately), then drain with `processes` engine processes."""
    rt = await _open(spec)
    try:
        if spec.role == "helper":
            stats = await rt.run(drain=True)
            result.outcomes = dict(stats.outcomes)
            return
        phase("enqueue")
        text = body_text(spec.size)
        times: list[tuple[str, float]] = []
        cpu0, t0 = cpu_now(), time.perf_counter()
        for start in range(0, spec.messages, ENQUEUE_BATCH):
            stop = min(spec.messages, start + ENQUEUE_BATCH)
            await rt.enqueue(payloads(spec, start, stop, text))
            now = time.time()
            times.extend((recipient(i), now) for i in range(start, stop))
        result.enqueue_wall_s = time.perf_counter() - t0
        result.enqueue_cpu_s = cpu_now() - cpu0
        write_enqueue_times(spec.enqueue_path, times)

        phase("run")
        holder: dict[str, Any] = {}

        async def body() -> None:
            helpers = _helpers(spec)
            holder["stats"] = await rt.run(drain=True)
            # Waiting here puts the helpers' CPU into this process's RUSAGE_CHILDREN.
            for h in helpers:
                await asyncio.to_thread(h.wait)

        await measured(spec, result, body)
        stats = holder["stats"]
        result.outcomes = dict(stats.outcomes)
        result.sent = int(stats.outcomes.get("delivered", 0))
        result.details = {
            "by_source_ip": dict(stats.by_source_ip),
            "claimed": stats.claimed,
            "processes": spec.processes,
        }
        if spec.processes > 1:
            # Largest helper peak (ru_maxrss of waited children, KB); after vfork it may hold
            # this process's own peak at spawn time, which is no more than our own peak.
            kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            result.details["helpers_peak_rss_mb"] = round(kb / 1024, 1)
    finally:
        await rt.close()
