"""`maildispatch enqueue` against hostile input (issue 10, findings 6 and 9).

Every line that once crashed the command (nesting past the recursion limit, a 400-digit
send_at, a 5,000-digit priority) is now one `line N: field: reason` with the field once; the
good lines around it are stored exactly once; exit codes are distinct: 0 all stored, 1 some
lines refused, 2 usage or I/O error.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli.test_cli import REPO, write_config
from tests.support.engine import payload

_ERROR = re.compile(r"^line (\d+): ([^:]+): (.*)$")


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enqueue-keys")


def enqueue(cfg: Path, path: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "enqueue", "--config", str(cfg), path],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )


def line(i: int, **extra: object) -> bytes:
    return json.dumps(payload(i, **extra)).encode()


def with_raw(i: int, member: str) -> bytes:
    """A good payload with one more member written as raw JSON text."""
    return line(i)[:-1] + b", " + member.encode() + b"}"


def errors(stderr: bytes) -> dict[int, tuple[str, str]]:
    out: dict[int, tuple[str, str]] = {}
    for text in stderr.decode().splitlines():
        m = _ERROR.match(text)
        if m:
            out[int(m.group(1))] = (m.group(2), m.group(3))
    return out


def test_each_former_crash_is_one_error_line_and_the_others_are_stored(
    tmp_path: Path, key_dir: Path
) -> None:
    cfg = write_config(tmp_path, key_dir, 2525)
    hostile = {
        2: (with_raw(2, '"metadata": {"a": ' + "[" * 5000 + "]" * 5000 + "}"), "payload"),
        4: (with_raw(4, '"send_at": ' + "9" * 400), "send_at"),
        6: (with_raw(6, '"priority": ' + "7" * 5000), "priority"),
        8: (line(8)[:20] + b"\xc3\x28" + line(8)[20:], "payload"),
        10: (line(10, to="jane@exa\u200bmple.org"), "to"),
        12: (line(12, to="Jane <jane@exa mple.org>"), "to"),
    }
    lines = [hostile[n][0] if n in hostile else line(n) for n in range(1, 14)]
    out = enqueue(cfg, "-", b"\n".join(lines) + b"\n")
    assert out.returncode == 1, out.stderr
    assert b"Traceback" not in out.stderr
    got = errors(out.stderr)
    assert set(got) == set(hostile), out.stderr
    for n, (_, field) in hostile.items():
        name, reason = got[n]
        assert name == field, (n, got[n])
        assert not reason.startswith(f"{field}:"), f"field printed twice: {got[n]}"
    assert "at byte 20" in got[8][1]
    assert "U+200B" in got[10][1]
    assert len(out.stdout.split()) == 13 - len(hostile)


def test_exit_codes_are_distinct(tmp_path: Path, key_dir: Path) -> None:
    cfg = write_config(tmp_path, key_dir, 2525)
    good = tmp_path / "good.jsonl"
    good.write_bytes(line(1) + b"\n" + line(2) + b"\n")
    assert enqueue(cfg, str(good)).returncode == 0
    assert enqueue(cfg, str(good)).returncode == 0  # found stored: duplicates are not errors

    missing = enqueue(cfg, str(tmp_path / "nowhere.jsonl"))
    assert missing.returncode == 2
    assert b"Traceback" not in missing.stderr and b"nowhere.jsonl" in missing.stderr

    folder = enqueue(cfg, str(tmp_path))
    assert folder.returncode == 2
    assert b"Traceback" not in folder.stderr

    usage = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "enqueue", "--config", str(cfg)],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert usage.returncode == 2

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(line(3) + b"\n{nope\n")
    assert enqueue(cfg, str(bad)).returncode == 1


def test_a_line_over_the_size_limit_is_skipped_without_losing_its_neighbours(
    tmp_path: Path, key_dir: Path
) -> None:
    cfg = write_config(tmp_path, key_dir, 2525, extra="")
    text = cfg.read_text().replace("[dispatch]\n", "[dispatch]\nmax_message_bytes = 1024\n", 1)
    cfg.write_text(text)
    limit = 6 * 1024 + (1 << 20)
    huge = with_raw(2, '"metadata": {"k": "' + "x" * (limit + 10) + '"}')
    out = enqueue(cfg, "-", line(1) + b"\n" + huge + b"\n" + line(3) + b"\n")
    assert out.returncode == 1, out.stderr
    assert errors(out.stderr) == {2: ("payload", f"the line is over {limit} bytes")}
    assert len(out.stdout.split()) == 2


@pytest.mark.slow
def test_a_bad_line_in_the_middle_of_3000_leaves_2999_stored_once(
    tmp_path: Path, key_dir: Path
) -> None:
    cfg = write_config(tmp_path, key_dir, 2525)
    lines = [line(n) for n in range(1, 3001)]
    # Line 1500 once crashed the command (RecursionError) and lost the unflushed batch.
    lines[1499] = with_raw(1500, '"to": ' + "[" * 5000 + "]" * 5000)
    out = enqueue(cfg, "-", b"\n".join(lines) + b"\n")
    assert out.returncode == 1, out.stderr[-2000:]
    assert set(errors(out.stderr)) == {1500}
    ids = out.stdout.decode().split()
    assert len(ids) == 2999 == len(set(ids))

    # Again: every line found stored, none stored twice.
    again = enqueue(cfg, "-", b"\n".join(lines) + b"\n")
    assert again.returncode == 1
    rows = again.stdout.decode().splitlines()
    assert len(rows) == 2999 and all(r.endswith(" duplicate") for r in rows)
    assert [r.split()[0] for r in rows] == ids

    status = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "status", "--config", str(cfg), "--json"],
        capture_output=True,
        timeout=60,
        check=True,
        cwd=REPO,
    )
    assert json.loads(status.stdout)["by_state"] == {"queued": 2999}
