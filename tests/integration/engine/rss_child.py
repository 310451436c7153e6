"""A worker process for the endless-reply memory test.

`python -m tests.integration.engine.rss_child WORKDIR PORT N CLIENT` enqueues N messages for
a server on 127.0.0.1:PORT and drains them. It prints two figures in KiB: the resident size
when dispatching starts, and the peak resident size while dispatching (Linux VmHWM, reset
just before the run through /proc/self/clear_refs, so start-up costs are not counted).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

from dispatcher.engine.runtime import Runtime
from tests.support.engine import DEST, make_config, payload


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


async def main(work: Path, port: int, n: int, client: str) -> tuple[int, int]:
    config = make_config(
        work,
        routes={DEST: f"127.0.0.1:{port}"},
        key_dir=work / "keys",
        dispatch={"max_attempts": 1},  # one attempt each: the run ends
    )
    config = replace(config, smtp=replace(config.smtp, client=client))
    rt = await Runtime.open(config)
    try:
        await rt.enqueue([payload(i) for i in range(n)])
        with open("/proc/self/clear_refs", "w") as f:  # noqa: ASYNC230 (procfs: instant)
            f.write("5")  # reset the peak (VmHWM)
        start = _status("VmRSS")
        stats = await rt.run(drain=True)
        print(dict(stats.outcomes), file=sys.stderr)
        return start, _status("VmHWM")
    finally:
        await rt.close()


if __name__ == "__main__":
    work, port, n, client = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    start, peak = asyncio.run(main(work, port, n, client))
    print(start, peak)
