"""The dispatcher side of a scenario, run in its own process: `python -m bench.worker SPEC`.

It prints `PHASE <name>` lines as it goes and one `RESULT <json>` line at the end. Enqueue
times go to `spec.enqueue_path` as "recipient<TAB>time" lines, for the latency join.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
from typing import Any

from bench.measure import measured, peak_rss_mb
from bench.spec import WorkerResult, WorkerSpec


async def run_module(spec: WorkerSpec, result: WorkerResult) -> None:
    """Another engineer's scenario module: `function(messages) -> dict` (sync or async)."""
    fn = getattr(importlib.import_module(spec.module), spec.function)
    out: dict[str, Any] = {}

    async def body() -> None:
        value = fn(spec.messages)
        if inspect.isawaitable(value):
            value = await value
        out.update(value or {})

    await measured(spec, result, body)
    result.details = out
    result.sent = int(out.get("messages", spec.messages))


async def main_async(spec: WorkerSpec) -> WorkerResult:
    result = WorkerResult()
    if spec.kind == "naive":
        from bench.naive import run_naive

        await run_naive(spec, result)
    elif spec.kind == "engine":
        from bench.engine import run_engine

        await run_engine(spec, result)
    elif spec.kind == "module":
        await run_module(spec, result)
    else:
        raise ValueError(f"kind: unknown worker kind {spec.kind!r}")
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = WorkerSpec.from_json(args[0])
    if spec.loop == "uvloop":
        import uvloop

        result = uvloop.run(main_async(spec))
    else:
        result = asyncio.run(main_async(spec))
    result.peak_rss_mb = peak_rss_mb()
    print(result.to_line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
