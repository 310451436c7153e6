"""The bad-input corpus through the CLI path, then through the engine to a strict sink.

`maildispatch enqueue --config FILE -` (a subprocess, JSON lines on stdin): every rejected
case prints `line N: FIELD: ...` naming the corpus's field and stores nothing; every
accepted case gets an id. Then `maildispatch run --drain` sends them to a strict sink
(refuses bare CR / bare LF, records exactly what arrived): no case may make a second
message, an extra recipient or an injected header appear there.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from dispatcher.config import load_config
from dispatcher.engine.runtime import make_queue
from dispatcher.message.verp import Verp
from tests.chaos.sink import SinkFactory
from tests.corpus import Case, check_rendered, load_corpus

REPO = Path(__file__).resolve().parents[3]
CASES = load_corpus()
_KEY = b'"idempotency_key": "corpus-1"'
_ERROR = re.compile(r"^line (\d+): (.*)$")


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _line(number: int, case: Case) -> bytes:
    # The corpus reuses one key for every case; through one enqueue run they would
    # collide, so each case gets its own (the only change to the document).
    return case.raw.replace(_KEY, b'"idempotency_key": "cli-%d"' % number)


def _config(tmp: Path, key_dir: Path, sink_port: int) -> Path:
    domains = sorted({c.rcpt.rpartition("@")[2] for c in CASES if c.rcpt})
    keys = [
        ("acme-news.example", "s1"),
        ("creator-letters.example", "s1"),
        ("send1.mdplatform.example", "s1"),
    ]
    text = [
        f'state_dir = "{tmp / "state"}"',
        'feedback_sender_id = "maildispatch"',
        "[queue]",
        'backend = "sqlite"',
        f'path = "{tmp / "queue.db"}"',
        'synchronous = "NORMAL"',
        "[dispatch]",
        'poll_interval = "50ms"',
        'shutdown_timeout = "5s"',
        "[smtp]",
        'starttls = "never"',
        "[verp]",
        f'secret_file = "{tmp / "verp.key"}"',
        "[dkim]",
        "create_missing = true",
    ]
    for domain, selector in keys:
        text += [
            "[[dkim.keys]]",
            f'domain = "{domain}"',
            f'selector = "{selector}"',
            f'file = "{key_dir / domain}.pem"',
        ]
    for name, author in (("acme", "acme-news.example"), ("creator", "creator-letters.example")):
        text += ["[[accounts]]", f'name = "{name}"', f'author_domains = ["{author}"]']
        text += ['pool = "warm"']
    text += [
        "[[pools]]",
        'name = "warm"',
        "[[pools.ips]]",
        'address = "127.0.0.2"',
        'ehlo = "mta1.mdplatform.example"',
        "[[pools.domains]]",
        'domain = "send1.mdplatform.example"',
        "[routes]",
        *(f'"{d}" = "127.0.0.1:{sink_port}"' for d in domains),
    ]
    path = tmp / "corpus.toml"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


async def _cli(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher.cli", *args, cwd=REPO,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(errors="replace")


@pytest.mark.slow
async def test_corpus_through_the_cli_and_a_strict_sink(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, recording_sink: SinkFactory
) -> None:
    verp = Verp.from_file(tmp_path / "verp.key", "b")
    sink = await recording_sink(tmp_path / "sink.jsonl", verp, strict=True)
    config = _config(tmp_path, tmp_path_factory.mktemp("keys"), sink.port)
    numbered = list(enumerate(CASES, 1))
    stdin = b"".join(_line(n, c) + b"\n" for n, c in numbered)

    code, out, err = await _cli("enqueue", "--config", str(config), "-", stdin=stdin)

    # Rejected: one `line N: FIELD: ...` per rejected case, naming the corpus's field
    # with control characters escaped (a field may hold CR/LF: one error, one line).
    printed: dict[int, str] = {}
    for text in err.split("\n"):
        assert "\r" not in text, text
        m = _ERROR.match(text)
        if m:
            n = int(m.group(1))
            assert n not in printed, text
            printed[n] = m.group(2)
    wrong = []
    for n, case in numbered:
        got = printed.get(n)
        if case.expect == "accept" and got is not None:
            wrong.append(f"{case.name}: accepted case printed {got!r}")
        elif case.expect == "reject" and (
            got is None or not got.startswith(f"{_printable(str(case.field))}: ")
        ):
            wrong.append(f"{case.name}: expected field {case.field!r}, printed {got!r}")
        elif case.expect == "reject" and got is not None:
            field = _printable(str(case.field))
            if got.startswith(f"{field}: {field}: "):
                wrong.append(f"{case.name}: the field is printed twice: {got!r}")
    assert not wrong, "\n".join(wrong)
    assert code == 1

    # Accepted: one id per accepted case, in line order; nothing else stored.
    accepted = [c for _, c in numbered if c.expect == "accept"]
    ids = out.split()
    assert len(ids) == len(accepted) == len(set(ids)), out
    queue = make_queue(load_config(config))
    await queue.open()
    try:
        assert sum((await queue.counts()).by_state.values()) == len(accepted)
    finally:
        await queue.close()

    code, _, err = await _cli("run", "--config", str(config), "--drain")
    assert code == 0, err[-2000:]

    receipts = [e for e in sink.events() if e.ev == "receipt"]
    per_id = Counter(e.id for e in receipts)
    assert not [i for i, n in per_id.items() if n > 1], "a case made a second message"
    assert set(per_id) == set(ids), "a message reached the sink that was never enqueued"
    by_id = {e.id: e for e in receipts}
    for msg_id, case in zip(ids, accepted, strict=True):
        rec = by_id[msg_id]
        assert rec.ending == "accepted", (case.name, rec.reply)
        assert rec.rcpts == (case.rcpt,), (case.name, rec.rcpts)
        assert rec.data is not None
        payload = json.loads(case.raw)
        check_rendered(
            rec.data,
            rcpt=str(case.rcpt),
            extra_headers=[*(payload.get("headers") or {}), "DKIM-Signature"],
            smtputf8=case.smtputf8,
        )
