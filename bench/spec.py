"""What the dispatcher-side child process is asked to do, and what it reports back.

Both travel as JSON: the spec on the child's command line, the result as one `RESULT` line
on its stdout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SOURCE_IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One dispatcher-side run.

    kind: "engine" (the maildispatch Runtime), "naive" (aiosmtplib, optionally dkimpy) or
    "module" (another engineer's `bench.<module>.run(messages)`).
    """

    kind: str
    messages: int
    run_id: str
    host: str = "127.0.0.1"
    port: int = 0
    size: int = 4200
    tls: bool = False
    # naive sender
    dkim: bool = False
    concurrency: int = 20
    reuse: bool = False
    # engine
    backend: str = "sqlite"
    dsn: str = field(default="", repr=False)
    processes: int = 1
    max_sessions: int = 100
    sessions_per_host: int = 20
    mark_at: str = "dot"  # [smtp] mark_at: "data" is the early mark, for comparison
    role: str = "main"  # "helper": an extra engine process that only drains
    # module
    module: str = ""
    function: str = "run"
    # files and tools
    enqueue_path: str = ""
    workdir: str = ""
    profile: str = ""
    loop: str = "uvloop"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


@dataclass(slots=True)
class WorkerResult:
    """Phase timings measured inside the child (CPU from getrusage: self and children)."""

    enqueue_wall_s: float = 0.0
    enqueue_cpu_s: float = 0.0
    run_wall_s: float = 0.0
    run_cpu_s: float = 0.0
    sent: int = 0
    peak_rss_mb: float = 0.0
    errors: int = 0
    first_error: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""

    def to_line(self) -> str:
        return "RESULT " + json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerResult:
        return cls(**json.loads(text))
