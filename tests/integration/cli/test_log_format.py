"""`[log] format`: a worker's log lines on stderr, key=value by default, JSON when asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _config(tmp_path: Path, log: str) -> Path:
    text = (REPO / "config.toml").read_text(encoding="utf-8")
    text = text.replace('state_dir = "state"', f'state_dir = "{tmp_path / "state"}"')
    text = text.replace('file = "state/', f'file = "{tmp_path}/state/')
    path = tmp_path / "config.toml"
    path.write_text(text + f"\n[log]\n{log}\n", encoding="utf-8")
    return path


def _run_drain(config: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "run", "--drain", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    return [line for line in out.stderr.splitlines() if not line.startswith("run: ")]


@pytest.mark.parametrize("setting", ['format = "json"', 'format = "json"\nlevel = "info"'])
def test_json_lines(tmp_path: Path, setting: str) -> None:
    lines = _run_drain(_config(tmp_path, setting))
    assert lines, "the worker logs its stop"
    records = [json.loads(line) for line in lines]
    assert {"ts", "level", "logger", "msg"} <= set(records[-1])
    assert any(r["msg"].startswith("stopped: mails_after_stop=0") for r in records)


def test_key_value_lines_by_default_and_level_warning_silences_info(tmp_path: Path) -> None:
    lines = _run_drain(_config(tmp_path, 'format = "kv"'))
    assert any(
        line.startswith("ts=") and ' msg="stopped: mails_after_stop=0' in line for line in lines
    )
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    assert _run_drain(_config(quiet, 'level = "warning"')) == []
