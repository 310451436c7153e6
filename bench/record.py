"""Result records: the figures of one scenario run, plus where and on what it ran."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in 0..100)."""
    if not sorted_values:
        raise ValueError("values: empty")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[int(rank) - 1]


def latencies(enqueued: dict[str, float], arrivals: dict[str, float]) -> list[float]:
    """Seconds from enqueue to arrival at the sink, for every key seen on both sides."""
    return sorted(arrivals[k] - t for k, t in enqueued.items() if k in arrivals)


def read_enqueue_times(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, _, t = line.partition("\t")
            out[key] = float(t)
    return out


def read_arrivals(path: Path) -> dict[str, float]:
    """First arrival per recipient (the bench gives every message its own recipient)."""
    out: dict[str, float] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            t, _mid, rcpt, _size = line.split("\t")
            out.setdefault(rcpt, float(t))
    return out


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            r = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return r.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
