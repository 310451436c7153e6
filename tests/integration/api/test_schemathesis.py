"""Schemathesis over /openapi.json against the live app: no 5xx, every response as the
document says (status, content type, schema, headers, Allow). Derandomized and bounded so
that CI stays short; positive_data_acceptance is left out (the document describes the
payload's shape; intake is stricter: addresses, domains, header injection)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.integration.api.conftest import start_api

ST = shutil.which("st", path=os.path.dirname(sys.executable))


@pytest.mark.slow
@pytest.mark.skipif(ST is None, reason="schemathesis is not installed")
async def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    extra = "rate_limit = 100000\nrate_burst = 100000"
    async for api in start_api(tmp_path, "sqlite", extra=extra):
        token = await api.key("acme", "full")
        assert ST is not None
        proc = await asyncio.create_subprocess_exec(
            ST,
            "run",
            f"{api.live.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,ignored_auth",
            "--max-examples",
            "15",
            "--generation-deterministic",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=300)
        text = out.decode("utf-8", "replace")
        assert proc.returncode == 0, text[-6000:]
        assert "generated" in text  # it ran cases, not nothing
        # The server logged no traceback: a 5xx would have one.
        assert (
            api.live.services.metrics.responses.labels("POST", "/v1/messages", "500")._value.get()
            == 0
        )
