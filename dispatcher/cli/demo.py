"""`maildispatch demo`: the whole engine on the embedded default, checked at the sink.

It starts the capture sink in its own process, routes the demo recipient domains to it,
enqueues N personalised messages across both accounts (and 10% of them again, to show that
duplicates are absorbed), dispatches everything, then checks what the sink really received:
each message exactly once, every DKIM signature verifying, a VERP envelope sender on a platform
domain, and the IP and platform-domain splits matching their weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from dispatcher.cli.sink import read_records
from dispatcher.config import Config, Route
from dispatcher.engine.engine import RunStats
from dispatcher.engine.runtime import Runtime

DEMO_DOMAINS = ("subscribers.example", "readers.example")
SPLIT_TOLERANCE = 0.03  # absolute share: 3 percentage points (platform domains: per message)
# Source IPs: weights steer sessions (admission opens each by weight), not each message, so
# the split is approximate: measured within 1.2 points on 2,000 messages, allowed 5.
IP_SPLIT_TOLERANCE = 0.05


@dataclass
class Check:
    name: str
    _: KW_ONLY
    ok: bool
    detail: str


@dataclass
class DemoReport:
    messages: int
    enqueued: int = 0
    deduplicated: int = 0
    delivered: int = 0
    at_sink: int = 0
    duplicates_at_sink: int = 0
    dkim_verified: int = 0
    dkim_signatures: int = 0
    by_ip: dict[str, int] = field(default_factory=dict)
    by_platform_domain: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    messages_per_second: float = 0.0
    cpu_seconds_per_1000: float = 0.0
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "messages": self.messages,
            "enqueued": self.enqueued,
            "deduplicated": self.deduplicated,
            "delivered": self.delivered,
            "at_sink": self.at_sink,
            "duplicates_at_sink": self.duplicates_at_sink,
            "dkim_signatures_verified": self.dkim_verified,
            "dkim_signatures": self.dkim_signatures,
            "by_source_ip": self.by_ip,
            "by_platform_domain": self.by_platform_domain,
            "outcomes": self.outcomes,
            "seconds": round(self.seconds, 3),
            "messages_per_second": round(self.messages_per_second, 1),
            "cpu_seconds_per_1000": round(self.cpu_seconds_per_1000, 3),
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def payloads(n: int, run_id: str, config: Config) -> list[dict[str, Any]]:
    """N personalised messages, alternating the two demo accounts."""
    accounts = config.accounts
    out: list[dict[str, Any]] = []
    for i in range(n):
        acct = accounts[i % len(accounts)]
        domain = acct.author_domains[0]
        broadcast = i % 2 == 0
        name = f"Reader {i}"
        p: dict[str, Any] = {
            "account": acct.name,
            "idempotency_key": f"demo-{run_id}-{i}",
            "from": f"{acct.name.title()} News <news@{domain}>",
            "to": f"reader{i}@{DEMO_DOMAINS[i % len(DEMO_DOMAINS)]}",
            "subject": f"Hello {name}: this week's letter",
            "text": (
                f"Hi {name},\n\nThanks for reading {acct.name}. Here is what is new this week.\n"
                + "A paragraph of news that fills the letter to a realistic size. " * 12
                + "\n\nSee you next week.\n"
            ),
            "stream": "broadcast" if broadcast else "transactional",
            "campaign": f"week-{run_id[:6]}" if broadcast else None,
            "metadata": {"reader": i},
        }
        if broadcast:
            p["unsubscribe"] = {"url": f"https://{domain}/u/{i}", "mailto": f"unsub@{domain}"}
        if p["campaign"] is None:
            del p["campaign"]
        out.append(p)
    return out


async def _start_sink(record: Path) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher.cli",
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--record",
        str(record),
        "--quiet",
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"the capture sink did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def _verify_chunk(items: list[bytes], records: dict[bytes, bytes]) -> tuple[int, int]:
    import dkim

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name, b"")

    verified = total = 0
    for data in items:
        d = dkim.DKIM(data)
        n = sum(
            1
            for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if line[:15].lower() == b"dkim-signature:"
        )
        for idx in range(n):
            total += 1
            if d.verify(idx=idx, dnsfunc=dnsfunc):
                verified += 1
    return verified, total


def _verify_all(datas: list[bytes], records: dict[bytes, bytes]) -> tuple[int, int]:
    """dkim.verify on every signature, spread over the cores (pure-Python RSA verify)."""
    workers = max(1, min(os.cpu_count() or 1, 4))
    chunks = [datas[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_verify_chunk, chunks, [records] * workers))
    return sum(r[0] for r in results), sum(r[1] for r in results)


async def run_demo(
    config: Config, n: int, progress: Any = None, *, verify_dkim: bool = True
) -> DemoReport:
    """Run the demo; `progress(stats)` is called as outcomes are written."""
    report = DemoReport(messages=n)
    run_id = uuid.uuid4().hex[:12]
    with tempfile.TemporaryDirectory(prefix="maildispatch-demo-") as tmp:
        record = Path(tmp) / "sink.rec"
        sink, port = await _start_sink(record)
        try:
            routes = {d: (Route("127.0.0.1", port),) for d in DEMO_DOMAINS}
            rt = await Runtime.open(config, routes=routes)
            try:
                batch = payloads(n, run_id, config)
                ids: list[str] = []
                for i in range(0, n, 1000):
                    res = await rt.enqueue(batch[i : i + 1000])
                    ids.extend(r.id for r in res)
                    report.enqueued += sum(r.created for r in res)
                again = batch[: max(1, n // 10)]
                for i in range(0, len(again), 1000):
                    res = await rt.enqueue(again[i : i + 1000])
                    report.deduplicated += sum(not r.created for r in res)
                cpu0, t0 = time.process_time(), time.monotonic()
                stats: RunStats = await rt.run(drain=True, progress=progress)
                report.seconds = time.monotonic() - t0
                cpu = time.process_time() - cpu0
                records_dns = rt.keys.dns_records()
                verp = rt.verp
                platform = {d.domain for p in config.pools for d in p.domains}
                weights_ip = {ip.address: ip.weight for p in config.pools for ip in p.ips}
                weights_dom = {d.domain: d.weight for p in config.pools for d in p.domains}
            finally:
                await rt.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                sink.send_signal(signal.SIGTERM)
            await sink.wait()

        report.outcomes = dict(stats.outcomes)
        report.delivered = stats.outcomes.get("delivered", 0)
        report.messages_per_second = report.delivered / report.seconds if report.seconds else 0
        report.cpu_seconds_per_1000 = cpu / max(1, report.delivered) * 1000

        wanted = set(ids)
        seen: Counter[str] = Counter()
        bad_sender = 0
        by_ip: Counter[str] = Counter()
        by_dom: Counter[str] = Counter()
        datas: list[bytes] = []
        for rec in read_records(record):
            msg_id = verp.parse(rec.mail_from)
            if msg_id is None or msg_id not in wanted:
                if msg_id is None:
                    bad_sender += 1
                continue
            seen[msg_id] += 1
            dom = rec.mail_from.rsplit("@", 1)[-1].lower()
            if dom not in platform:
                bad_sender += 1
            by_ip[rec.peer] += 1
            by_dom[dom] += 1
            datas.append(rec.data)
        report.at_sink = len(seen)
        report.duplicates_at_sink = sum(c - 1 for c in seen.values())
        report.by_ip = dict(sorted(by_ip.items()))
        report.by_platform_domain = dict(sorted(by_dom.items()))
        if verify_dkim and datas:
            report.dkim_verified, report.dkim_signatures = await asyncio.to_thread(
                _verify_all, datas, records_dns
            )

    c = report.checks
    c.append(Check("enqueued", ok=report.enqueued == n, detail=f"{report.enqueued} of {n} new"))
    c.append(
        Check(
            "duplicates absorbed",
            ok=report.deduplicated == max(1, n // 10),
            detail=f"{report.deduplicated} re-enqueued with the same key returned the original id",
        )
    )
    c.append(
        Check("all arrived", ok=report.at_sink == n, detail=f"{report.at_sink} of {n} at the sink")
    )
    c.append(
        Check(
            "none twice",
            ok=report.duplicates_at_sink == 0,
            detail=f"{report.duplicates_at_sink} extra",
        )
    )
    if verify_dkim:
        c.append(
            Check(
                "DKIM verifies",
                ok=report.dkim_signatures == 2 * report.at_sink
                and report.dkim_verified == report.dkim_signatures,
                detail=f"{report.dkim_verified} of {report.dkim_signatures} signatures",
            )
        )
    c.append(Check("VERP sender", ok=bad_sender == 0, detail=f"{bad_sender} bad envelope senders"))
    c.append(_split_check("IP split", by_ip, weights_ip, IP_SPLIT_TOLERANCE))
    c.append(_split_check("domain split", by_dom, weights_dom))
    return report


def _split_check(
    name: str, got: Counter[str], weights: dict[str, int], tolerance: float = SPLIT_TOLERANCE
) -> Check:
    total = sum(got.values()) or 1
    wsum = sum(weights.values()) or 1
    worst = 0.0
    parts = []
    for key, w in weights.items():
        share = got.get(key, 0) / total
        want = w / wsum
        worst = max(worst, abs(share - want))
        parts.append(f"{key} {share:.1%} (want {want:.1%})")
    return Check(name, ok=worst <= tolerance, detail="; ".join(parts))
