"""Send-ahead: the next message's MAIL/RCPT/DATA ride with this message's dot.

Session level (PipeliningSession with `ahead=`) and engine level (`[smtp] send_ahead = true`),
against real SMTP servers on loopback: round trips counted at the server, the promise around
a dropped connection, a refused look-ahead RCPT, a refused look-ahead mark, the session's last
message, and the exact bytes at the sink.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest

from dispatcher.config import Config
from dispatcher.engine.outcomes import Classifier, Verdict
from dispatcher.engine.runtime import Runtime
from dispatcher.smtp.pipelining import PipeliningSession
from dispatcher.smtp.session import Ahead, Phase, SendResult, SessionTimeouts
from queues.protocol import MessageState
from tests.support.commit import FixedCommit
from tests.support.engine import DEST, RuntimeFactory, make_config, payload
from tests.support.smtp_server import Behaviour, ServerFactory, Turn

NASTY = (
    b"From: a@acme.example\r\nSubject: dots\r\n\r\n.\r\n..\r\n.x\r\nmid . dot\r\n...\r\n.\r\n",
    b"Subject: no final newline\r\n\r\n.",
    b"Subject: crlf dot crlf\r\n\r\n\r\n.\r\n",
    b"Subject: plain\r\n\r\nhello\r\n",
)


def verdict(result: SendResult) -> Verdict:
    return Classifier().decide(result, 0, 0.0).verdict


def mark(value: bool = True) -> FixedCommit:
    return FixedCommit(value)


async def opened(port: int) -> PipeliningSession:
    sess = PipeliningSession(
        "127.0.0.1",
        port,
        source_ip="127.0.0.2",
        ehlo_name="mta1.platform.example",
        timeouts=SessionTimeouts(connect=2.0, command=2.0, data=5.0),
        starttls=False,
    )
    assert await sess.open() is None
    return sess


def offer(ahead: Ahead) -> Callable[[], Ahead | None]:
    """What the lane gives the session: the look-ahead, taken when the dot is written."""
    return lambda: ahead


async def chain(
    sess: PipeliningSession, bodies: tuple[bytes, ...], marks: list[FixedCommit]
) -> list[SendResult]:
    """Send `bodies` one after another, each with the next one as its look-ahead."""
    results = []
    for i, body in enumerate(bodies):
        ahead = None
        if i + 1 < len(bodies):
            ahead = offer(Ahead("b@x.example", f"r{i + 1}@dest.example", marks[i + 1]))
        results.append(
            await sess.send("b@x.example", f"r{i}@dest.example", body, marks[i], ahead=ahead)
        )
    return results


# -- session level -----------------------------------------------------------------------------


async def test_one_round_trip_per_message_and_exact_bytes_at_the_sink(
    smtp_server: ServerFactory,
) -> None:
    s = await smtp_server()
    sess = await opened(s.port)
    bodies = NASTY * 5
    before = s.flights
    results = await chain(sess, bodies, [mark() for _ in bodies])
    flights = s.flights - before
    await sess.close()
    assert [r.code for r in results] == [250] * len(bodies)
    # One flight for the first envelope, then one per message (body + next envelope).
    assert flights == len(bodies) + 1
    got = [(k.rcpts, k.data) for k in s.accepted()]
    want = [
        ([f"r{i}@dest.example"], b if b.endswith(b"\r\n") else b + b"\r\n")
        for i, b in enumerate(bodies)
    ]
    assert got == want


async def test_a_refused_look_ahead_rcpt_is_its_verdict_and_the_session_goes_on(
    smtp_server: ServerFactory,
) -> None:
    def rcpt(t: Turn) -> str | None:
        return "550 5.1.1 no such user" if len(t.server.commands("RCPT")) == 2 else None

    # As a real server: no valid recipient, no DATA.
    s = await smtp_server(Behaviour(data_needs_rcpt=True), rcpt=rcpt)
    sess = await opened(s.port)
    bodies = NASTY[3:] * 3
    results = await chain(sess, bodies, [mark() for _ in bodies])
    assert sess.is_open
    await sess.close()
    assert [(r.phase, r.code) for r in results] == [
        (Phase.DOT, 250),
        (Phase.RCPT, 550),
        (Phase.DOT, 250),
    ]
    assert verdict(results[1]) == Verdict.BOUNCED
    assert [r.rcpts for r in s.accepted()] == [["r0@dest.example"], ["r2@dest.example"]]
    assert s.connections == 1


async def test_a_refused_look_ahead_mark_never_writes_its_dot(smtp_server: ServerFactory) -> None:
    s = await smtp_server()
    sess = await opened(s.port)
    bodies = NASTY[3:] * 2
    results = await chain(sess, bodies, [mark(True), mark(False)])
    await sess.close()
    assert results[0].code == 250
    assert results[1].phase == Phase.MARK and not results[1].dot_written
    assert verdict(results[1]) == Verdict.RELEASED
    assert not sess.dot_written
    # The sink saw the first message and nothing of the second.
    assert [(r.rcpts, r.ending) for r in s.received] == [(["r0@dest.example"], "accepted")]


async def test_a_drop_after_the_dot_leaves_the_look_ahead_short_of_its_dot(
    smtp_server: ServerFactory,
) -> None:
    s = await smtp_server(dot="drop")
    sess = await opened(s.port)
    nxt = mark()
    first = await sess.send(
        "b@x.example",
        "r0@dest.example",
        NASTY[3],
        mark(),
        ahead=offer(Ahead("b@x.example", "r1@dest.example", nxt)),
    )
    assert first.phase == Phase.DOT and first.code is None and first.dot_written
    assert verdict(first) == Verdict.AMBIGUOUS
    assert not first.reusable and not sess.is_open
    assert not sess.ahead_written(nxt)
    assert [r.ending for r in s.received] == ["unacked"]


# -- engine level ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


def with_send_ahead(config: Config, on: bool = True) -> Config:
    return dataclasses.replace(config, smtp=dataclasses.replace(config.smtp, send_ahead=on))


class RunEngine(Protocol):
    async def __call__(
        self, port: int, n: int, send_ahead: bool, *, tmp: Path | None = None, **dispatch: object
    ) -> tuple[Runtime, list[str], dict[str, int]]: ...


@pytest.fixture
def run_engine(tmp_path: Path, key_dir: Path, open_runtime: RuntimeFactory) -> RunEngine:
    """Enqueue `n` messages and drain them to 127.0.0.1:`port`, one session per host."""

    async def run(
        port: int, n: int, send_ahead: bool, *, tmp: Path | None = None, **dispatch: object
    ) -> tuple[Runtime, list[str], dict[str, int]]:
        config = make_config(
            tmp or tmp_path,
            routes={DEST: f"127.0.0.1:{port}"},
            key_dir=key_dir,
            dispatch={"sessions_per_host": 1, **dispatch},
        )
        rt = await open_runtime(with_send_ahead(config, send_ahead))
        ids = [r.id for r in await rt.enqueue([payload(i) for i in range(n)])]
        stats = await rt.run(drain=True)
        return rt, ids, dict(stats.outcomes)

    return run


async def test_engine_needs_about_one_round_trip_per_message(
    tmp_path: Path, smtp_server: ServerFactory, run_engine: RunEngine
) -> None:
    n = 60
    per_message = {}
    for on in (False, True):
        s = await smtp_server()
        _rt, _ids, outcomes = await run_engine(s.port, n, on, tmp=tmp_path / str(on))
        assert outcomes == {"delivered": n}
        assert len(s.accepted()) == n
        per_message[on] = s.flights / n
    assert per_message[False] >= 2.0
    # EHLO, the first envelope and QUIT per connection; one flight per message otherwise
    # (a little more when the lane briefly has no next message ready).
    assert per_message[True] < 1.25


async def test_engine_releases_the_look_ahead_when_the_link_drops_after_a_dot(
    smtp_server: ServerFactory, run_engine: RunEngine
) -> None:
    s = await smtp_server(dot=lambda t: "drop" if t.messages == 2 else None)
    rt, ids, outcomes = await run_engine(s.port, 6, True)
    (lost,) = [r for r in s.received if r.ending == "unacked"]
    lost_id = rt.verp.parse(lost.mail_from)
    assert lost_id is not None
    recs = {r.id: r for r in await rt.queue.get(ids)}
    assert recs[lost_id].state == MessageState.AMBIGUOUS
    others = [r for i, r in recs.items() if i != lost_id]
    assert [r.state for r in others] == [MessageState.DELIVERED] * 5
    # The look-ahead went back to the queue once (no attempt counted), then out.
    assert outcomes.get("queued") == 1
    assert [r.attempts for r in others] == [1] * 5
    assert len(s.accepted()) == 5


async def test_engine_never_sends_ahead_on_a_sessions_last_message(
    smtp_server: ServerFactory, run_engine: RunEngine
) -> None:
    s = await smtp_server()
    _rt, _ids, outcomes = await run_engine(s.port, 7, True, messages_per_session=2)
    assert outcomes == {"delivered": 7}
    # A look-ahead on a last message would reach the server twice.
    assert len(s.commands("MAIL")) == 7
    assert s.connections == 4
    assert len(s.accepted()) == 7


async def test_engine_with_send_ahead_bounces_a_refused_rcpt_and_delivers_the_rest(
    smtp_server: ServerFactory, run_engine: RunEngine
) -> None:
    def rcpt(t: Turn) -> str | None:
        return "550 5.1.1 no such user" if len(t.server.commands("RCPT")) % 3 == 2 else None

    s = await smtp_server(Behaviour(data_needs_rcpt=True), rcpt=rcpt)
    _rt, _ids, outcomes = await run_engine(s.port, 9, True)
    assert outcomes == {"delivered": 6, "bounced": 3}
    assert len(s.accepted()) == 6
    assert s.connections == 1


async def test_engine_stopping_releases_the_look_ahead_without_its_dot(
    tmp_path: Path, key_dir: Path, smtp_server: ServerFactory, open_runtime: RuntimeFactory
) -> None:
    # The first dot's reply comes late: the engine is told to stop while it is awaited and
    # the second message's commands are already on the wire behind that dot.
    first_in = asyncio.Event()

    def dot(t: Turn) -> str | None:
        if t.messages != 1:
            return None
        first_in.set()
        return "sleep 1 250 2.0.0 ok"

    s = await smtp_server(dot=dot)
    config = make_config(
        tmp_path,
        routes={DEST: f"127.0.0.1:{s.port}"},
        key_dir=key_dir,
        dispatch={"sessions_per_host": 1},
    )
    rt = await open_runtime(with_send_ahead(config))
    ids = [r.id for r in await rt.enqueue([payload(i) for i in range(4)])]
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop=stop))
    await asyncio.wait_for(first_in.wait(), timeout=20)
    stop.set()
    stats = await asyncio.wait_for(task, timeout=20)
    recs = await rt.queue.get(ids)
    assert sorted(r.state for r in recs) == sorted(
        [MessageState.DELIVERED] + [MessageState.QUEUED] * 3
    )
    assert all(r.attempts == 0 for r in recs if r.state == MessageState.QUEUED)
    assert dict(stats.outcomes) == {"delivered": 1, "queued": 3}
    assert len(s.commands("MAIL")) == 2  # the look-ahead's MAIL went out with the first dot
    assert [r.ending for r in s.received] == ["accepted"]  # and nothing more of it


def test_the_switch_is_read_from_config_and_a_non_boolean_is_refused() -> None:
    import tomllib

    from dispatcher.config import ConfigError, parse_config

    repo = Path(__file__).resolve().parents[3]
    raw = tomllib.loads((repo / "config.toml").read_text())
    raw["smtp"]["send_ahead"] = False
    assert parse_config(raw, repo).smtp.send_ahead is False
    raw["smtp"]["send_ahead"] = True
    assert parse_config(raw, repo).smtp.send_ahead is True
    raw["smtp"]["send_ahead"] = "yes"
    with pytest.raises(ConfigError) as err:
        parse_config(raw, repo)
    assert err.value.key_path == "smtp.send_ahead"
