"""A worker process for the coordination tests: admission over the counters a worker would
use, sessions that admit and "send", and the sends recorded to a file per worker after a
short delay (standing for the attempt log written with the outcome batch). The rebuild
source reads every worker's file, as a rebuild reads the store's daily counts.

`python -m tests.integration.coordination.admission_child SPEC_JSON`; writes SPEC["out"].
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ip_pools import (
    Admission,
    IpState,
    LocalCounters,
    PlatformDomain,
    Policy,
    PoolSpec,
    Shaping,
    ShapingRule,
    SourceIp,
    WarmupAssignment,
    WarmupSchedule,
    parse_rate,
)
from ip_pools.counters import Counters
from ip_pools.redis_counters.counters import RedisCounters
from ip_pools.redis_counters.keyspace import Keyspace
from ip_pools.warmup import utc_day

PROVIDER = "google"


class FileSource:
    """Daily counts from every worker's record file (the store, for these tests)."""

    def __init__(self, folder: Path, live: int) -> None:
        self.folder = folder
        self.live = live

    async def daily_counts(self, day: int) -> Mapping[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for f in self.folder.glob("*.rec"):
            for line in f.read_text().splitlines():
                ip, provider, at = line.split()
                if utc_day(float(at)) == day:
                    counts[(ip, provider)] += 1
        return counts

    async def pauses(self, now: float) -> Sequence[tuple[str, str, float]]:
        return ()

    async def live_workers(self) -> int | None:
        return self.live


def policy(spec: dict[str, Any]) -> Policy:
    today = dt.datetime.now(dt.UTC).date()
    cap = spec.get("cap")
    ip = SourceIp(
        spec["ip"],
        "mta.example",
        1,
        IpState.WARMING if cap else IpState.ACTIVE,
        WarmupAssignment("t", today) if cap else None,
    )
    schedules = {"t": WarmupSchedule("t", (cap, cap))} if cap else {}
    return Policy(
        pools=(PoolSpec("p", (ip,), (PlatformDomain("p.example"),)),),
        shaping=Shaping(
            ShapingRule(connections=spec.get("connections", 50), rate=parse_rate(spec["rate"]))
        ),
        schedules=schedules,
    )


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    folder = Path(spec["dir"])
    record = folder / f"{spec['worker']}.rec"
    redis: RedisCounters | None = None
    counters: Counters
    if spec["redis"]:
        redis = RedisCounters(
            spec["redis"],
            worker_id=spec["worker"],
            keyspace=Keyspace(spec["prefix"]),
            source=FileSource(folder, spec["processes"]),
            known_ips=[spec["ip"]],
            timeout=0.3,
            ack_window=1.0,
        )
        await redis.start(wait=10.0)
        counters = redis
    else:
        counters = LocalCounters()
    share = 1.0
    queue = None
    if spec.get("queue"):
        # Without Redis: each process counts at 1/N, N the live workers of the registry.
        from queues.sqlite.backend import SqliteQueue

        queue = SqliteQueue(Path(spec["queue"]))
        await queue.open()
        await queue.register_worker()
        while (live := await queue.live_workers(time.time())) < spec["processes"]:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        share = 1.0 / live
    adm = Admission(policy(spec), counters, share=share, slot_ttl=1.0)
    start_at, seconds = float(spec["start_at"]), float(spec["seconds"])
    await asyncio.sleep(max(0.0, start_at - time.time()))
    end = start_at + seconds
    sends: list[float] = []
    unrecorded: list[float] = []
    waits = 0

    async def recorder() -> None:
        # Attempts reach "the store" in batches, a little after they went out.
        while time.time() < end + 0.5:
            await asyncio.sleep(0.05)
            batch, unrecorded[:] = list(unrecorded), []
            if batch:
                with record.open("a") as fh:
                    fh.writelines(f"{spec['ip']} {PROVIDER} {t}\n" for t in batch)
                if redis is not None:
                    for t in batch:
                        redis.recorded(spec["ip"], PROVIDER, t)

    async def session() -> None:
        nonlocal waits
        while (now := time.time()) < end:
            try:
                d = await adm.admit(spec["ip"], PROVIDER, now)
            except ConnectionError:
                waits += 1  # Redis away or rebuilding: the mail waits
                await asyncio.sleep(0.05)
                continue
            if d.ok:
                sends.append(time.time())
                await asyncio.sleep(0.002)
                unrecorded.append(time.time())
            else:
                await asyncio.sleep(min(max(0.0, d.retry_at - time.time()), 0.2))

    rec = asyncio.create_task(recorder())
    await asyncio.gather(*(session() for _ in range(spec.get("sessions", 3))))
    await rec
    result = {
        "sends": sends,
        "waits": waits,
        "rebuilds": redis.rebuilds if redis else 0,
        "share": share,
    }
    if queue is not None:
        await queue.close()
    if redis is not None:
        await redis.close()
    return result


if __name__ == "__main__":
    import uvloop

    spec = json.loads(sys.argv[1])
    out = uvloop.run(main(spec))
    Path(spec["out"]).write_text(json.dumps(out))
