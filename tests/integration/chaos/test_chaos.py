"""The chaos machinery itself: the checker's rules, the sink's records, and short real runs.

A checker that cannot fail proves nothing: each rule is shown to fire on a made-up history,
and a real run with the "retry" ambiguous policy (which resends unknowable outcomes) must be
caught with duplicates.
"""

from __future__ import annotations

from pathlib import Path

import aiosmtplib
import pytest

from dispatcher.message.verp import Verp
from queues.protocol import MessageState
from tests.chaos.checker import Fate, check
from tests.chaos.faults import BY_NAME, Fault, FaultPlan
from tests.chaos.harness import ChaosOptions, run_chaos
from tests.chaos.sink import SinkEvent, SinkFactory

S = MessageState


def receipt(msg_id: str, ending: str, fault: str | None = None, n: int = 0) -> SinkEvent:
    return SinkEvent("receipt", msg_id, n, fault, ending)


def fault(msg_id: str, name: str, n: int = 0) -> SinkEvent:
    return SinkEvent("fault", msg_id, n, name)


def test_a_clean_history_passes() -> None:
    v = check(
        ["a", "b", "c", "d"],
        {
            "a": Fate(S.DELIVERED),
            "b": Fate(S.AMBIGUOUS),
            "c": Fate(S.BOUNCED),
            "d": Fate(S.AMBIGUOUS, recovered=True),
        },
        [
            fault("a", "mail_421"),
            receipt("a", "refused", "dot_451", n=1),
            receipt("a", "accepted", n=2),
            receipt("b", "unacked", "drop_dot"),
            fault("c", "rcpt_511"),
        ],
    )
    assert v.ok, v.examples
    assert (v.messages, v.ambiguous, v.faults) == (4, 2, 4)


@pytest.mark.parametrize(
    ("fates", "events", "broken"),
    [
        ({"a": Fate(S.DELIVERED)}, [receipt("a", "accepted")] * 2, "duplicates"),
        (
            {"a": Fate(S.AMBIGUOUS)},
            [receipt("a", "unacked", "drop_dot"), receipt("a", "accepted")],
            "duplicates",
        ),
        ({}, [], "lost"),
        ({"a": Fate(S.COMMITTING)}, [], "lost"),
        ({"a": Fate(S.DELIVERED)}, [receipt("a", "refused", "dot_451")], "lost"),
        ({"a": Fate(S.DEFERRED)}, [], "unfinished"),
        ({"a": Fate(S.BOUNCED)}, [receipt("a", "accepted")], "violations"),
        ({"a": Fate(S.FAILED)}, [receipt("a", "unacked", "silent_dot")], "violations"),
        ({"a": Fate(S.AMBIGUOUS)}, [fault("a", "mail_421")], "violations"),
        (
            {"a": Fate(S.DELIVERED)},
            [receipt("a", "accepted"), receipt("x", "accepted")],
            "violations",
        ),
    ],
)  # fmt: skip
def test_each_rule_fires(fates: dict[str, Fate], events: list[SinkEvent], broken: str) -> None:
    v = check(["a"], fates, events)
    assert not v.ok
    assert getattr(v, broken) == 1, (broken, v)


def test_fault_plan_is_deterministic_and_bounded() -> None:
    ids = [f"{i:032x}" for i in range(2000)]

    def faults(seed: int) -> list[Fault | None]:
        plan = FaultPlan(seed=seed, rate=0.5, max_faulty=2)
        return [plan.fault_for(i, n) for i in ids for n in range(3)]

    plan = FaultPlan(seed=11, rate=0.5, max_faulty=2)
    first = faults(11)
    assert first == faults(11)
    assert all(plan.fault_for(i, 2) is None for i in ids)
    hit = [f for f in first if f is not None]
    assert 0.4 < len(hit) / (2 * len(ids)) < 0.6
    assert {f.name for f in hit} == set(BY_NAME)  # every kind shows up
    assert first != faults(12)


async def _send(port: int, mail_from: str, body: bytes) -> str:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=1.0)
    await client.connect()
    try:
        _, text = await client.sendmail(mail_from, ["r@x.example"], body)
        return text
    finally:
        client.close()


@pytest.mark.parametrize(
    ("name", "ending", "client_sees"),
    [
        ("dot_451", "refused", aiosmtplib.SMTPDataError),
        ("drop_dot", "unacked", aiosmtplib.SMTPServerDisconnected),
        ("silent_dot", "unacked", aiosmtplib.SMTPTimeoutError),
        (None, "accepted", None),
    ],
)
async def test_sink_records_how_each_message_ended(
    tmp_path: Path,
    recording_sink: SinkFactory,
    name: str | None,
    ending: str,
    client_sees: type[Exception] | None,
) -> None:
    verp = Verp(b"k" * 32)
    faults = (BY_NAME[name],) if name else ()
    sink = await recording_sink(tmp_path / "r.jsonl", verp, FaultPlan(1, rate=1.0, faults=faults))
    sender = verp.address(verp.token("a" * 32), "p.example")
    body = b"Subject: x\r\n\r\nhello\r\n"
    if client_sees is None:
        await _send(sink.port, sender, body)
    else:
        with pytest.raises(client_sees):
            await _send(sink.port, sender, body)
    events = await sink.wait_until(lambda evs: any(e.ev == "receipt" for e in evs))
    (ev,) = [e for e in events if e.ev == "receipt"]
    assert (ev.id, ev.ending, ev.fault, ev.rcpts) == ("a" * 32, ending, name, ("r@x.example",))


@pytest.mark.slow
async def test_short_chaos_run_on_sqlite_keeps_the_promise(tmp_path: Path) -> None:
    report = await run_chaos(
        ChaosOptions(
            seed=3, duration=12, messages=400, workers=2, kills=4, backend="sqlite",
            drain_timeout=120, workdir=tmp_path,
        )
    )  # fmt: skip
    v = report.verdict
    assert v.ok, (report.line(), v.examples)
    assert report.kills == 4 and v.messages == 400
    assert v.faults > 0 and v.states["delivered"] > 0


@pytest.mark.slow
async def test_retrying_unknowable_outcomes_is_caught_as_duplicates(tmp_path: Path) -> None:
    # The "retry" policy resends messages whose final dot got no reply; the sink received
    # some of them already, so the checker must report duplicates.
    report = await run_chaos(
        ChaosOptions(
            seed=4, duration=8, messages=300, workers=2, kills=1, backend="sqlite",
            stop_worker=False, fault_rate=0.6, drain_timeout=120, ambiguous="retry",
            workdir=tmp_path,
        )
    )  # fmt: skip
    assert report.verdict.duplicates > 0, report.line()
    assert not report.verdict.ok
