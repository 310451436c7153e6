"""Admission in the running engine, against a real SMTP server that records the peer
address: warmup caps with spill to IPs with room, waiting with the due time set and no claim
churn, connection and per-connection limits, rates, warmup kept across a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dispatcher.engine.runtime import Runtime
from ip_pools.warmup import DAY, next_utc_day, utc_day
from queues.protocol import ClaimedMessage, Lease, MessageState
from tests.support.engine import DEST, RuntimeFactory, make_config, payload
from tests.support.smtp_server import ServerFactory, SmtpServer, Turn

PROVIDER = {"providers": [{"name": "dest", "match": {"domain": [DEST]}}]}
TODAY = dt.datetime.now(dt.UTC).date()


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


def warming(day_caps: list[int], **schedule: Any) -> dict[str, Any]:
    return {
        **PROVIDER,
        "warmup": {"schedules": [{"name": "w", "per_day": day_caps, **schedule}]},
    }


WARM_IP = {"state": "warming", "warmup": {"schedule": "w", "started": TODAY.isoformat()}}


async def runtime(
    open_runtime: RuntimeFactory,
    tmp: Path,
    key_dir: Path,
    server: SmtpServer,
    **cfg: Any,
) -> Runtime:
    config = make_config(tmp, routes={DEST: f"127.0.0.1:{server.port}"}, key_dir=key_dir, **cfg)
    return await open_runtime(config)


async def test_a_warming_ip_at_its_cap_spills_to_the_ip_with_room(
    smtp_server: ServerFactory, open_runtime: RuntimeFactory, tmp_path: Path, key_dir: Path
) -> None:
    server = await smtp_server()
    rt = await runtime(
        open_runtime,
        tmp_path,
        key_dir,
        server,
        ips=(("127.0.0.2", 3), ("127.0.0.3", 1)),
        ip_fields={"127.0.0.2": WARM_IP},
        extra=warming([5]),
        dispatch={"messages_per_session": 4},
    )
    ids = [r.id for r in await rt.enqueue([payload(i) for i in range(40)])]
    await rt.run(drain=True)
    peers = Counter(m.peer for m in server.accepted())
    # The heavy IP carried exactly its cap; the light one, with room, all the rest.
    assert peers == {"127.0.0.2": 5, "127.0.0.3": 35}
    assert {r.state for r in await rt.queue.get(ids)} == {MessageState.DELIVERED}
    counts = await rt.queue.daily_counts(utc_day(time.time()))
    assert counts == {("127.0.0.2", "dest"): 5, ("127.0.0.3", "dest"): 35}
    (one,) = (await rt.queue.attempts([ids[0]])).values()
    assert one[0].provider == "dest" and one[0].source_ip in peers


async def test_when_no_ip_has_room_mail_waits_until_the_cap_resets(
    smtp_server: ServerFactory, open_runtime: RuntimeFactory, tmp_path: Path, key_dir: Path
) -> None:
    server = await smtp_server()
    rt = await runtime(
        open_runtime,
        tmp_path,
        key_dir,
        server,
        ips=(("127.0.0.2", 1),),
        ip_fields={"127.0.0.2": WARM_IP},
        extra=warming([3]),
    )
    ids = [r.id for r in await rt.enqueue([payload(i) for i in range(10)])]
    before = time.time()
    await rt.run(drain=True)
    assert len(server.accepted()) == 3  # never over the cap
    views = {v.id: v for v in await rt.queue.describe(ids)}
    waiting = [v for v in views.values() if v.state != MessageState.DELIVERED]
    assert len(waiting) == 7
    midnight = next_utc_day(before)
    for v in waiting:
        # Back with its due time = when admission can next succeed, no attempt counted.
        assert (v.state, v.attempts, v.due_at) == (MessageState.QUEUED, 0, midnight)
    records = await rt.queue.get([v.id for v in waiting])
    assert {r.provider for r in records} == {"dest"}


class CountingClaims:
    """The queue, counting how often each message is claimed (churn would claim again)."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.claims: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def claim(
        self, lease: Lease, limit: int, now: float, skip: Sequence[Any] = ()
    ) -> list[ClaimedMessage]:
        got: list[ClaimedMessage] = await self._queue.claim(lease, limit, now, skip)
        self.claims.update(m.id for m in got)
        return got


async def test_a_throttled_provider_is_not_claimed_again_before_its_due_time(
    smtp_server: ServerFactory, open_runtime: RuntimeFactory, tmp_path: Path, key_dir: Path
) -> None:
    server = await smtp_server()
    rt = await runtime(
        open_runtime,
        tmp_path,
        key_dir,
        server,
        ips=(("127.0.0.2", 1),),
        # 1 a minute: after the first message, the next token is a minute away.
        extra={**PROVIDER, "shaping": {"dest": {"rate": "1/min"}}},
        dispatch={"admission_wait": "1s"},
    )
    ids = [r.id for r in await rt.enqueue([payload(i) for i in range(20)])]
    counting = CountingClaims(rt.queue)
    engine = rt.engine()
    engine.queue = counting  # type: ignore[assignment]
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    await asyncio.sleep(2.5)  # many poll intervals (50 ms): churn would claim again and again
    stop.set()
    await asyncio.wait_for(task, 20)
    assert len(server.accepted()) == 1  # the rate held
    assert max(counting.claims[i] for i in ids) == 1, counting.claims.most_common(3)
    views = await rt.queue.describe(ids)
    later = [v for v in views if v.state == MessageState.QUEUED]
    assert len(later) == 19
    assert all(v.attempts == 0 and v.due_at is not None for v in later)
    # Due when the next token conforms (about a minute after the first), not at once.
    assert min(v.due_at or 0 for v in later) >= time.time() + 50


async def test_connection_and_per_connection_limits_hold(
    smtp_server: ServerFactory, open_runtime: RuntimeFactory, tmp_path: Path, key_dir: Path
) -> None:
    seen = {"max_open": 0}

    def at_dot(turn: Turn) -> str:
        open_now = sum(1 for c in turn.server.sessions if not c.closed)
        seen["max_open"] = max(seen["max_open"], open_now)
        return "sleep 0.02 250 2.0.0 ok"

    server = await smtp_server(dot=at_dot)
    rt = await runtime(
        open_runtime,
        tmp_path,
        key_dir,
        server,
        ips=(("127.0.0.2", 1),),
        extra={**PROVIDER, "shaping": {"dest": {"connections": 2, "messages_per_connection": 5}}},
        dispatch={"sessions_per_host": 10},  # the provider's own rule wins
    )
    await rt.enqueue([payload(i) for i in range(40)])
    await rt.run(drain=True)
    assert len(server.accepted()) == 40
    assert seen["max_open"] <= 2
    per_connection = [len(c.messages) for c in server.sessions]
    assert max(per_connection) <= 5 and sum(per_connection) == 40
    assert server.connections >= 8


async def test_a_rate_spaces_the_messages(
    smtp_server: ServerFactory, open_runtime: RuntimeFactory, tmp_path: Path, key_dir: Path
) -> None:
    arrivals: list[float] = []
    server = await smtp_server(on_message=lambda m: arrivals.append(time.monotonic()))
    rt = await runtime(
        open_runtime,
        tmp_path,
        key_dir,
        server,
        ips=(("127.0.0.2", 1), ("127.0.0.3", 1)),
        extra={**PROVIDER, "shaping": {"dest": {"rate": "10/s"}}},
    )
    await rt.enqueue([payload(i) for i in range(12)])
    await rt.run(drain=True)
    assert len(server.accepted()) == 12 == len(arrivals)
    # 10/s per IP, evenly spaced: 12 messages over two IPs take at least 5 intervals.
    assert arrivals[-1] - arrivals[0] >= 0.4, arrivals[-1] - arrivals[0]


async def test_warmup_counts_and_progress_survive_a_restart_and_the_day_advances(
    smtp_server: ServerFactory, open_runtime: RuntimeFactory, tmp_path: Path, key_dir: Path
) -> None:
    server = await smtp_server()
    cfg: dict[str, Any] = {
        "ips": (("127.0.0.2", 1),),
        "ip_fields": {"127.0.0.2": WARM_IP},
        "extra": warming([4, 8], advance_at=0.5),
        "streams": {"transactional": {"max_age": "3d"}},  # still fresh a day later
    }
    rt = await runtime(open_runtime, tmp_path, key_dir, server, **cfg)
    await rt.enqueue([payload(i) for i in range(6)])
    await rt.run(drain=True)
    assert len(server.accepted()) == 4
    await rt.close()

    # A restart on the same day: the store's count holds the cap.
    rt = await runtime(open_runtime, tmp_path, key_dir, server, **cfg)
    await rt.enqueue([payload(i) for i in range(6, 10)])
    await rt.run(drain=True)
    assert len(server.accepted()) == 4
    (record,) = await rt.queue.warmup_progress()
    assert (record.address, record.day) == ("127.0.0.2", 1)
    await rt.close()

    # The next UTC day (a clock a day ahead): day 1 counted (4 of 4), so day 2's cap of 8.
    rt = await runtime(open_runtime, tmp_path, key_dir, server, **cfg)
    engine = rt.engine()
    engine.clock = lambda: time.time() + DAY
    await engine.run(drain=True)
    assert len(server.accepted()) == 4 + 6  # the 6 waiting, under the new cap
    (record,) = await rt.queue.warmup_progress()
    assert (record.day, record.on_day) == (2, utc_day(time.time() + DAY))

