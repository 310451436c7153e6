"""The PostgreSQL half of the conformance suite cannot be skipped silently in CI: with the
server unreachable it skips locally, and fails when `CI` is set."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TEST = (
    "tests/integration/queues/test_queue_conformance.py"
    "::test_round_trip_enqueue_claim_outcome[postgres]"
)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_conformance(ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["MAILDISPATCH_TEST_PG_DSN"] = f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"
    if ci:
        env["CI"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", TEST],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_an_unreachable_server_skips_locally_and_fails_in_ci(ci: bool) -> None:
    proc = run_conformance(ci)
    out = proc.stdout + proc.stderr
    assert "PostgreSQL unreachable" in out, out
    if ci:
        assert proc.returncode == 1 and "1 error" in out, out  # failed in its fixture
        assert "CI is set" in out, out
    else:
        assert proc.returncode == 0 and "1 skipped" in out, out
