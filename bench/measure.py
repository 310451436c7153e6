"""Helpers for the dispatcher-side child: phases, OS CPU accounting, the optional profiler."""

from __future__ import annotations

import resource
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.spec import WorkerResult, WorkerSpec


def cpu_now() -> float:
    """CPU seconds of this process (all threads) and its waited-for children, per the OS."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) since its exec, in MB.

    Not ru_maxrss from wait4: a child started with vfork inherits its parent's high-water
    mark until it execs, so the parent's size would leak into the child's figure.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def phase(name: str) -> None:
    print(f"PHASE {name}", flush=True)


def write_enqueue_times(path: str, rows: list[tuple[str, float]]) -> None:
    if not path:
        return
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{rcpt}\t{t:.6f}\n" for rcpt, t in rows)


async def measured(
    spec: WorkerSpec, result: WorkerResult, body: Callable[[], Awaitable[None]]
) -> None:
    """Run `body` as the timed phase, under a profiler when asked."""
    profiler: Any = None
    if spec.profile:
        profiler = _start_profiler(spec.profile)
    cpu0, t0 = cpu_now(), time.perf_counter()
    await body()
    result.run_wall_s = time.perf_counter() - t0
    result.run_cpu_s = cpu_now() - cpu0
    if profiler is not None:
        _stop_profiler(profiler, spec.profile)


def _start_profiler(path: str) -> Any:
    try:
        from pyinstrument import Profiler  # type: ignore[import-not-found,unused-ignore]

        prof = Profiler(async_mode="enabled", interval=0.0005)
        prof.start()
        return prof
    except ImportError:
        import cProfile

        cp = cProfile.Profile()
        cp.enable()
        return cp


def _stop_profiler(prof: Any, path: str) -> None:
    import cProfile
    import io
    import pstats

    if isinstance(prof, cProfile.Profile):
        prof.disable()
        prof.dump_stats(path + ".prof")
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(60)
        Path(path).write_text(out.getvalue())
        return
    prof.stop()
    Path(path).write_text(prof.output_text(unicode=False, color=False, show_all=False))
    Path(path + ".html").write_text(prof.output_html())
