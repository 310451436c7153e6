"""The HTTP API under an open-loop load: `python -m bench.api_load [--backend sqlite|postgres]`.

The API runs as its own process (`maildispatch api`, uvicorn + uvloop + httptools); the load
comes from another process that sends POST /v1/messages on a fixed schedule (request i at
t0 + i/rate) whatever the replies, over keep-alive connections opened as needed, and
measures each latency from the request's scheduled time: queueing delay counts (a
closed-loop tool like wrk waits for replies and hides it). Message: the standard 4.2 KB.

Also: one 10,000-message POST /v1/messages/batch, and the intake cost per message
(validation and rendering, in this process). Figures are medians of `--repeat` runs.
Not in `bench --ci` (30 s a run); `--duration 3` is a short variant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.message import body_text

AUTHOR = "acme-news.example"


def payload(i: int, run: str) -> dict[str, Any]:
    return {
        "from": f"Acme <news@{AUTHOR}>",
        "to": f"reader{i}@dest.example",
        "subject": f"Benchmark message {i}",
        "text": body_text(),
        "idempotency_key": f"{run}-{i}",
    }


# -- the open-loop generator (a process of its own) ---------------------------------------


async def _generate(
    port: int, token: str, rate: float, duration: float, run: str
) -> dict[str, Any]:
    n = int(rate * duration)
    bodies = [json.dumps(payload(i, run)).encode() for i in range(n)]
    head = (
        "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    )
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def one(i: int, due: float) -> None:
        conn = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
        reader, writer = conn
        body = bodies[i]
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - due)
        status = status_line.split(b" ", 2)[1].decode()
        if status != "202":
            errors[status] = errors.get(status, 0) + 1
        idle.append(conn)

    t0 = time.perf_counter() + 0.2
    tasks = []
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    for _, w in idle:
        w.close()
    latencies.sort()
    return {
        "rate": rate,
        "requests": n,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "max_ms": latencies[-1] * 1000,
        "errors": errors,
        "connections": len(idle),
    }


def generator_main(argv: list[str]) -> None:
    port, token, rate, duration, run = argv
    import uvloop

    print(json.dumps(uvloop.run(_generate(int(port), token, float(rate), float(duration), run))))


def open_loop(port: int, token: str, rate: float, duration: float, run: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.api_load", "--generate", str(port), token, str(rate),
         str(duration), run],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# -- the API process ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp: Path, backend: str, dsn: str, port: int) -> Path:
    from tests.support.api import write_config

    extra = f'[api]\nlisten = "127.0.0.1:{port}"\nrate_limit = 1000000\nrate_burst = 1000000\n'
    return write_config(tmp, backend=backend, dsn=dsn, extra=extra)


def _cli(*args: str) -> str:
    exe = [sys.executable, "-m", "dispatcher.cli"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, check=True).stdout


def _wait_ready(port: int) -> None:
    import urllib.request

    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("the API did not become ready")


def batch_seconds(port: int, token: str, size: int, run: str) -> float:
    import httpx

    doc = json.dumps({"messages": [payload(i, run) for i in range(size)]}).encode()
    with httpx.Client(timeout=300) as c:
        start = time.perf_counter()
        r = c.post(
            f"http://127.0.0.1:{port}/v1/messages/batch",
            content=doc,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        took = time.perf_counter() - start
    r.raise_for_status()
    assert r.json()["accepted"] == size, r.text[:500]
    return took


def intake_ms_per_message(config_path: Path, count: int = 2000) -> float:
    """Validation and rendering of the standard message (MessageFactory.build), in ms."""
    from dispatcher.config import load_config
    from dispatcher.message.intake import MessageFactory, parse_payload
    from dispatcher.message.verp import Verp

    config = load_config(config_path)
    factory = MessageFactory.from_config(config, Verp(b"k" * 32, "b"))
    raws = [json.dumps({**payload(i, "r"), "account": "acme"}).encode() for i in range(count)]
    now = time.time()
    start = time.perf_counter()
    for raw in raws:
        factory.build(parse_payload(raw), now=now)
    return (time.perf_counter() - start) / count * 1000


def main() -> None:
    if sys.argv[1:2] == ["--generate"]:
        generator_main(sys.argv[2:])
        return
    p = argparse.ArgumentParser(prog="python -m bench.api_load")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--dsn", default="", help="PostgreSQL database (migrated here)")
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--duration", type=float, default=30)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sweep", default="", help="comma-separated rates: find the highest p99<20ms")
    p.add_argument("--batch", type=int, default=10_000)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="md-api-bench-"))
    port = _free_port()
    config = _config(tmp, args.backend, args.dsn, port)
    _cli("db", "migrate", "--config", str(config))
    token = _cli("accounts", "key", "create", "acme", "--scope", "send", "--config", str(config))
    token = token.strip()
    server = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "api", "--config", str(config)],
        env={**os.environ},
    )
    report: dict[str, Any] = {"backend": args.backend}
    try:
        _wait_ready(port)
        open_loop(port, token, 100, 1, "warmup")
        runs = [
            open_loop(port, token, args.rate, args.duration, f"r{k}") for k in range(args.repeat)
        ]
        report["single"] = {
            "rate": args.rate,
            "duration_s": args.duration,
            "runs": runs,
            **{
                key: statistics.median(r[key] for r in runs)
                for key in ("p50_ms", "p99_ms", "max_ms")
            },
        }
        if args.sweep:
            sweep = []
            for rate in (float(x) for x in args.sweep.split(",")):
                r = open_loop(port, token, rate, min(args.duration, 10), f"s{rate}")
                sweep.append(r)
                print(f"rate {rate:.0f}: p99 {r['p99_ms']:.1f} ms", file=sys.stderr)
            report["sweep"] = sweep
            ok = [r["rate"] for r in sweep if r["p99_ms"] < 20 and not r["errors"]]
            report["highest_rate_p99_under_20ms"] = max(ok) if ok else None
        if args.batch:
            times = [batch_seconds(port, token, args.batch, f"b{k}") for k in range(args.repeat)]
            report["batch"] = {"size": args.batch, "seconds": times,
                               "median_s": statistics.median(times)}  # fmt: skip
        report["intake_ms_per_message"] = statistics.median(
            intake_ms_per_message(config) for _ in range(3)
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
