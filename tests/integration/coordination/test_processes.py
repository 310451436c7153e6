"""Several worker processes over one set of counters (real processes, real Redis): a daily
cap and a rate held by three together; a SIGKILLed process's connection slot coming back
after its lease; Redis stopped mid-run and started again empty (mail waits, the epoch
refuses, counts rebuilt before the capped IP sends: the day's total never passes the cap);
and without Redis, each process under cap / N."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ip_pools.counters import slot_key
from ip_pools.redis_counters.counters import RedisCounters
from ip_pools.redis_counters.keyspace import Keyspace
from tests.support.redis_server import SHARED_URL, RedisServer, unique_prefix

pytestmark = [pytest.mark.redis, pytest.mark.slow]

IP = "192.0.2.44"
CHILD = "tests.integration.coordination.admission_child"


def spawn(tmp: Path, n: int, **spec: Any) -> list[tuple[subprocess.Popen[bytes], Path]]:
    spec.setdefault("start_at", time.time() + 5.0)  # all started (a loaded machine is slow)
    procs = []
    for i in range(n):
        out = tmp / f"w{i}.json"
        s = {"dir": str(tmp), "worker": f"w{i}", "processes": n, "out": str(out), **spec}
        procs.append((subprocess.Popen([sys.executable, "-m", CHILD, json.dumps(s)]), out))
    return procs


def results(procs: list[tuple[subprocess.Popen[bytes], Path]]) -> list[dict[str, Any]]:
    out = []
    for p, path in procs:
        assert p.wait(60) == 0
        out.append(json.loads(path.read_text()))
    return out


def worst_window(times: list[float], width: float) -> int:
    times = sorted(times)
    best = j = 0
    for i, t in enumerate(times):
        while times[j] < t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_three_processes_hold_a_cap_and_a_rate(tmp_path: Path) -> None:
    # A warming IP, cap 90 today; 60/s,burst=5: in 3 s the rate would allow ~185.
    procs = spawn(
        tmp_path, 3, redis=SHARED_URL, prefix=unique_prefix(), ip=IP, rate="60/s,burst=5",
        cap=90, seconds=4.0,
    )
    got = await asyncio.to_thread(results, procs)
    sends = sorted(t for r in got for t in r["sends"])
    assert len(sends) == 90, [len(r["sends"]) for r in got]  # the cap, reached, never passed
    assert all(len(r["sends"]) > 0 for r in got)  # shared, not one process alone
    # Rate: over any 1 s, at most rate + burst + processes x batch (batch: 150 ms = 5).
    assert worst_window(sends, 1.0) <= 60 + 5 + 3 * 5


async def test_without_redis_each_process_stays_under_cap_over_n(tmp_path: Path) -> None:
    procs = spawn(
        tmp_path, 3, redis="", queue=str(tmp_path / "q.db"), ip=IP, rate="60/s,burst=5",
        cap=90, seconds=2.5,
    )
    got = await asyncio.to_thread(results, procs)
    for r in got:
        assert abs(r["share"] - 1 / 3) < 1e-9
        assert 0 < len(r["sends"]) <= 30
    assert sum(len(r["sends"]) for r in got) <= 90


async def test_redis_restarted_empty_mid_run_never_passes_the_cap(tmp_path: Path) -> None:
    server = RedisServer().start()
    try:
        start_at = time.time() + 5.0
        # 60/s,burst=5: ~90 go before the stop, and the 3.5 s after the restart would allow
        # ~200 more; the cap is 150 and holds across the restart only if the counts come back.
        procs = spawn(
            tmp_path, 3, redis=server.url, prefix="t", ip=IP, rate="60/s,burst=5", cap=150,
            seconds=6.0, start_at=start_at,
        )
        await asyncio.sleep(max(0.0, start_at + 1.5 - time.time()))
        server.stop()  # mid-run: the mail waits
        stopped = time.time()
        await asyncio.sleep(1.0)
        server.start()  # empty
        restarted = time.time()
        got = await asyncio.to_thread(results, procs)
    finally:
        server.close()
    sends = sorted(t for r in got for t in r["sends"])
    assert 130 <= len(sends) <= 150  # the cap binds (a few lost to sends counted twice)
    assert sum(r["waits"] for r in got) > 0  # decisions refused while Redis was away
    assert not [t for t in sends if stopped + 0.35 < t < restarted]  # nothing went meanwhile
    after = [t for t in sends if t > restarted]
    assert after  # it resumed once rebuilt
    assert len(sends) - len(after) < 150  # the cap was not reached before the stop
    assert sum(r["rebuilds"] for r in got) == 2  # the first start, and after the restart


async def test_a_killed_process_slot_comes_back_after_its_lease(tmp_path: Path) -> None:
    prefix = unique_prefix()
    code = (
        "import asyncio, sys, time\n"
        "from ip_pools.counters import slot_key\n"
        "from ip_pools.redis_counters.counters import RedisCounters\n"
        "from ip_pools.redis_counters.keyspace import Keyspace\n"
        "async def main():\n"
        f"    c = RedisCounters({SHARED_URL!r}, worker_id='dying', keyspace=Keyspace({prefix!r}))\n"
        "    await c.start(wait=5)\n"
        f"    assert await c.acquire_slot(slot_key({IP!r}, 'google'), 1, 's', 1.5, time.time())\n"
        "    print('held', flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    me = RedisCounters(SHARED_URL, worker_id="me", keyspace=Keyspace(prefix))
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"held"
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
        killed = time.monotonic()
        await me.start(wait=5)
        key = slot_key(IP, "google")
        assert not await me.acquire_slot(key, 1, "mine", 30.0, time.time())  # still leased
        while not await me.acquire_slot(key, 1, "mine", 30.0, time.time()):
            assert time.monotonic() - killed < 5.0
            await asyncio.sleep(0.1)
        assert time.monotonic() - killed >= 1.0  # it came back when the lease ended
    finally:
        if child.returncode is None:
            child.kill()
        await me.close()
