"""The engine end to end: SQLite queue, real DKIM, real SMTP servers on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import dkim
import pytest

from dispatcher.engine.runtime import Runtime
from dispatcher.message.intake import MessageError
from queues.protocol import MessageState
from tests.support.engine import DEST, PLATFORM, make_config, payload
from tests.support.faultsink import FaultSink


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


async def run_against(
    tmp: Path, key_dir: Path, rules: dict[str, str], n: int = 3, **cfg: object
) -> tuple[Runtime, FaultSink, list[str]]:
    sink = await FaultSink(rules=dict(rules)).start()
    config = make_config(
        tmp,
        routes={DEST: f"127.0.0.1:{sink.port}"},
        key_dir=key_dir,
        **cfg,  # type: ignore[arg-type]
    )
    rt = await Runtime.open(config)
    ids = [r.id for r in await rt.enqueue([payload(i) for i in range(n)])]
    await rt.run(drain=True)
    return rt, sink, ids


async def states(rt: Runtime, ids: list[str]) -> list[MessageState]:
    return [r.state for r in await rt.queue.get(ids)]


async def test_delivers_every_message_once_signed_and_verp(tmp_path: Path, key_dir: Path) -> None:
    rt, sink, ids = await run_against(tmp_path, key_dir, {}, n=40)
    try:
        assert await states(rt, ids) == [MessageState.DELIVERED] * 40
        got = sink.accepted()
        assert len(got) == 40
        assert sorted(rt.verp.parse(r.mail_from) or "" for r in got) == sorted(ids)
        assert {r.mail_from.rsplit("@", 1)[1] for r in got} == set(PLATFORM)
        records = rt.keys.dns_records()
        for r in got[:5]:
            d = dkim.DKIM(r.data)
            assert d.verify(idx=0, dnsfunc=lambda name, timeout=5: records.get(name, b""))
            assert d.verify(idx=1, dnsfunc=lambda name, timeout=5: records.get(name, b""))
        # Sessions were reused: far fewer connections than messages.
        assert sink.connections < 40
    finally:
        await rt.close()
        await sink.stop()


async def test_421_greeting_defers_with_a_retry_time(tmp_path: Path, key_dir: Path) -> None:
    rt, sink, ids = await run_against(tmp_path, key_dir, {"greeting": "421 4.3.2 busy"})
    try:
        recs = await rt.queue.get(ids)
        assert [r.state for r in recs] == [MessageState.DEFERRED] * 3
        assert all(r.attempts == 1 and r.last_reply_code == 421 for r in recs)
        assert (await rt.queue.next_due() or 0) > time.time()
    finally:
        await rt.close()
        await sink.stop()


async def test_drop_after_data_command_defers(tmp_path: Path, key_dir: Path) -> None:
    rt, sink, ids = await run_against(tmp_path, key_dir, {"data": "drop"})
    try:
        assert await states(rt, ids) == [MessageState.DEFERRED] * 3
        assert sink.received == []
    finally:
        await rt.close()
        await sink.stop()


async def test_silence_after_the_dot_is_ambiguous_and_held(tmp_path: Path, key_dir: Path) -> None:
    rt, sink, ids = await run_against(tmp_path, key_dir, {"dot": "drop"}, n=2)
    try:
        assert await states(rt, ids) == [MessageState.AMBIGUOUS] * 2
        assert await rt.queue.next_due() is None  # held: nothing will resend them
    finally:
        await rt.close()
        await sink.stop()


async def test_ambiguous_retry_policy_requeues(tmp_path: Path, key_dir: Path) -> None:
    rt, sink, ids = await run_against(
        tmp_path,
        key_dir,
        {"dot": "drop"},
        n=1,
        streams={"transactional": {"ambiguous": "retry"}},
    )
    try:
        assert await states(rt, ids) == [MessageState.DEFERRED]
    finally:
        await rt.close()
        await sink.stop()


async def test_550_511_bounces(tmp_path: Path, key_dir: Path) -> None:
    rt, sink, ids = await run_against(tmp_path, key_dir, {"rcpt": "550 5.1.1 no such user"})
    try:
        recs = await rt.queue.get(ids)
        assert [r.state for r in recs] == [MessageState.BOUNCED] * 3
        assert all("5.1.1" in (r.last_reply_text or "") for r in recs)
    finally:
        await rt.close()
        await sink.stop()


async def test_550_571_is_deferred_not_bounced(tmp_path: Path, key_dir: Path) -> None:
    rt, sink, ids = await run_against(tmp_path, key_dir, {"dot": "550 5.7.1 blocked by policy"})
    try:
        assert await states(rt, ids) == [MessageState.DEFERRED] * 3
    finally:
        await rt.close()
        await sink.stop()


async def test_weighted_source_ips_are_really_bound(tmp_path: Path, key_dir: Path) -> None:
    rt, sink, _ = await run_against(
        tmp_path, key_dir, {}, n=60, ips=(("127.0.0.2", 2), ("127.0.0.3", 1))
    )
    try:
        peers = [r.peer for r in sink.accepted()]
        assert peers.count("127.0.0.2") == 40 and peers.count("127.0.0.3") == 20
    finally:
        await rt.close()
        await sink.stop()


async def test_bad_payload_stores_nothing(tmp_path: Path, key_dir: Path) -> None:
    config = make_config(tmp_path, key_dir=key_dir)
    rt = await Runtime.open(config)
    try:
        with pytest.raises(MessageError) as err:
            await rt.enqueue([payload(1), payload(2, to=["a@x.example", "b@x.example"])])
        assert err.value.field == "to"
        assert await rt.queue.active_count() == 0
    finally:
        await rt.close()


async def test_sigterm_style_stop_returns_unstarted_messages(tmp_path: Path, key_dir: Path) -> None:
    # A slow server: the engine is stopped while most messages wait for a session.
    sink = await FaultSink(rules={"dot": "sleep 0.2 250 2.0.0 ok"}).start()
    config = make_config(
        tmp_path,
        routes={DEST: f"127.0.0.1:{sink.port}"},
        key_dir=key_dir,
        dispatch={"sessions_per_host": 1},
    )
    rt = await Runtime.open(config)
    try:
        ids = [r.id for r in await rt.enqueue([payload(i) for i in range(30)])]
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run(stop=stop))
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        got = await states(rt, ids)
        delivered = got.count(MessageState.DELIVERED)
        assert 0 < delivered < 30
        assert got.count(MessageState.QUEUED) == 30 - delivered
        assert len(sink.accepted()) == delivered
        recs = await rt.queue.get(ids)
        assert all(r.attempts == 0 for r in recs if r.state == MessageState.QUEUED)
    finally:
        await rt.close()
        await sink.stop()


async def test_each_account_sends_from_its_own_pool(tmp_path: Path, key_dir: Path) -> None:
    import dataclasses

    from dispatcher.config import AccountConfig
    from ip_pools import PoolSpec, SourceIp

    sink = await FaultSink().start()
    base = make_config(tmp_path, routes={DEST: f"127.0.0.1:{sink.port}"}, key_dir=key_dir)
    transactional = PoolSpec(
        name="tx",
        ips=(SourceIp("127.0.0.9", "tx1.platform.example"),),
        domains=base.pools[0].domains,
    )
    receipts = AccountConfig("receipts", base.accounts[0].author_domains, pool="tx")
    config = dataclasses.replace(
        base, pools=(*base.pools, transactional), accounts=(*base.accounts, receipts)
    )
    rt = await Runtime.open(config)
    try:
        await rt.enqueue(
            [payload(i) for i in range(4)]
            + [payload(i, account="receipts", idempotency_key=f"r-{i}") for i in range(4)]
        )
        await rt.run(drain=True)
        by_account = {r.peer for r in sink.accepted() if "reader0@" in r.rcpts[0]}
        assert sorted(r.peer for r in sink.accepted()) == ["127.0.0.2"] * 4 + ["127.0.0.9"] * 4
        assert by_account == {"127.0.0.2", "127.0.0.9"}
    finally:
        await rt.close()
        await sink.stop()
