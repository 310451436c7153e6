"""Events to a webhook endpoint under a broadcast: `python -m bench.webhooks_load`.

A broadcast of `--messages` (default 50,000) standard messages to the fast sink, drained by
the engine in this process, twice per run: with no event consumer ("off"), then with
`maildispatch webhooks` (the sender, its own process) posting to one endpoint (a receiver
on loopback, its own process, verifying every signature). The outbox is written in both
(it is part of every outcome write); "on" adds the consumer reading it while the engine
writes. Figures, medians of `--runs`:

- engine msgs/s off and on, and the slowdown (goal under 10%);
- events/s through to the receiver (message events over first outcome to last receipt);
- HTTP requests per 1,000 events (goal at most 5);
- event lag p50/p99, from the event's time (its outcome write) to its receipt (goal p99 <= 2 s).

Not in `bench --ci` (a run takes minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.engine import config_dict, payloads
from bench.message import body_text
from bench.spec import WorkerSpec

KEK = "bench-webhook-key-0123456789abcdef0123"
ACCOUNT = "bench"


def _config(spec: WorkerSpec, state: Path) -> dict[str, Any]:
    cfg = config_dict(spec, state)
    cfg["webhooks"] = {
        "encryption_keys": [KEK],
        "allow_private": True,
        "poll_interval": "50ms",
        "max_batch": 1000,
    }
    return cfg


def _parse(spec: WorkerSpec, state: Path) -> Any:
    from dispatcher.config import parse_config

    return parse_config(_config(spec, state), base_dir=state)


def sender_main(spec_json: str) -> None:
    """The sender process: `python -m bench.webhooks_load --sender SPEC`."""
    import signal

    from dispatcher.events.sender import serve_webhooks

    spec = WorkerSpec.from_json(spec_json)
    config = _parse(spec, Path(spec.workdir))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await serve_webhooks(config, stop)

    import uvloop

    uvloop.run(main())


def _start_sink() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.sink_process"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY"):
            return proc, int(line.split()[1])
    raise RuntimeError("sink did not start")


async def _register(rt: Any, url: str) -> str:
    from dispatcher.events.secrets import SecretBox, new_secret
    from dispatcher.events.webhooks import EndpointDoc, check_types, encode, new_webhook_id
    from queues.webhooks import WebhookRecord

    wid = new_webhook_id()
    secret = new_secret()
    doc = EndpointDoc(
        event_types=check_types(None),
        batch_size=1000,
        secrets=[SecretBox((KEK,)).seal(secret, wid)],
        start=await rt.queue.last_event_seq(),
    )
    await rt.queue.save_webhook(WebhookRecord(wid, ACCOUNT, url, encode(doc)))
    return secret


async def one(messages: int, events_on: bool, work: Path, sink_port: int) -> dict[str, Any]:
    from dispatcher.engine.runtime import Runtime

    state = work / ("on" if events_on else "off")
    state.mkdir(parents=True)
    spec = WorkerSpec(
        kind="engine", messages=messages, run_id=f"wh{time.time_ns()}", port=sink_port,
        workdir=str(state),
    )  # fmt: skip
    rt = await Runtime.open(_parse(spec, state))
    procs: list[subprocess.Popen[bytes]] = []
    record = state / "receipts.jsonl"
    out: dict[str, Any] = {}
    try:
        if events_on:
            port_file, secret_file = state / "rx.port", state / "rx.secret"
            rx = subprocess.Popen(  # noqa: ASYNC220 (the bench driver, before timing)
                [sys.executable, "-m", "tests.support.webhook_receiver",
                 "--port-file", str(port_file), "--secret-file", str(secret_file),
                 "--record", str(record), "--log", str(state / "receiver.log")],
            )  # fmt: skip
            procs.append(rx)
            while not port_file.exists() or not port_file.read_text():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            secret = await _register(rt, f"http://127.0.0.1:{port_file.read_text()}/hook")
            secret_file.write_text(secret)
            procs.append(
                subprocess.Popen(  # noqa: ASYNC220
                    [sys.executable, "-m", "bench.webhooks_load", "--sender", spec.to_json()]
                )
            )
        text = body_text(spec.size)
        for start in range(0, messages, 1000):
            await rt.enqueue(payloads(spec, start, min(messages, start + 1000), text))
        t0 = time.perf_counter()
        stats = await rt.run(drain=True)
        wall = time.perf_counter() - t0
        out["msgs_per_s"] = round(int(stats.outcomes.get("delivered", 0)) / wall, 1)
        if events_on:
            target = messages
            deadline = time.monotonic() + 300
            got: list[tuple[float, float]] = []
            requests = 0
            unverified = 0
            while time.monotonic() < deadline:
                got, requests, unverified = [], 0, 0
                if record.exists():
                    for line in record.read_text().splitlines():
                        r = json.loads(line)
                        requests += 1
                        unverified += 0 if r["verified"] else 1
                        got += [(r["at"], at) for _, at in r["events"]]
                if len(got) >= target:
                    break
                await asyncio.sleep(0.2)
            lags = sorted(recv - at for recv, at in got)
            first = min(at for _, at in got)
            last = max(recv for recv, _ in got)
            out.update(
                events=len(got),
                requests=requests,
                unverified=unverified,
                requests_per_1000_events=round(1000 * requests / max(1, len(got)), 2),
                events_per_s=round(len(got) / (last - first), 1),
                lag_p50_s=round(lags[len(lags) // 2], 3),
                lag_p99_s=round(lags[int(len(lags) * 0.99)], 3),
                log_excerpt=(state / "receiver.log").read_text().splitlines()[:3],
            )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
        await rt.close()
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--sender":
        sender_main(sys.argv[2])
        return
    p = argparse.ArgumentParser(prog="python -m bench.webhooks_load")
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    sink, port = _start_sink()
    runs = []
    try:
        for i in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="md-whbench-") as tmp:
                # Alternate which goes first: the first of a pair runs on a colder machine.
                if i % 2:
                    on = asyncio.run(one(args.messages, True, Path(tmp), port))
                    off = asyncio.run(one(args.messages, False, Path(tmp), port))
                else:
                    off = asyncio.run(one(args.messages, False, Path(tmp), port))
                    on = asyncio.run(one(args.messages, True, Path(tmp), port))
            run = {
                "msgs_per_s_off": off["msgs_per_s"],
                "msgs_per_s_on": on["msgs_per_s"],
                "slowdown_pct": round(100 * (1 - on["msgs_per_s"] / off["msgs_per_s"]), 1),
                **{k: v for k, v in on.items() if k != "msgs_per_s"},
            }
            print(
                f"run {i + 1}: " + json.dumps({k: v for k, v in run.items() if k != "log_excerpt"}),
                flush=True,
            )
            runs.append(run)
    finally:
        sink.terminate()
        sink.wait(20)
    keys = ["msgs_per_s_off", "msgs_per_s_on", "slowdown_pct", "events_per_s",
            "requests_per_1000_events", "lag_p50_s", "lag_p99_s"]  # fmt: skip
    median = {k: statistics.median(r[k] for r in runs) for k in keys}
    print(f"median of {len(runs)}: " + json.dumps(median))
    print("receiver log:\n" + "\n".join(runs[-1]["log_excerpt"]))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": median}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    main()
