"""The sink in its own process (under uvloop): `python -m bench.sink_process --port 0 ...`.

Speaks to its parent over stdout, one line each: `READY <port>` once listening,
`COUNT <n>` as messages arrive (at most ten times a second), and on SIGTERM `STATS <json>`
before it exits. Arrivals (time, Message-ID, first recipient, size) go to `--arrivals`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from bench.measure import peak_rss_mb
from bench.sink import SinkOptions, SinkStats, start_sink


def _write_arrivals(path: Path, stats: SinkStats) -> None:
    with path.open("w", encoding="utf-8") as f:
        for a in stats.arrivals:
            f.write(f"{a.time:.6f}\t{a.message_id}\t{a.rcpt}\t{a.size}\n")


async def serve(args: argparse.Namespace) -> None:
    tls = None
    if args.cert:
        from bench.tlscert import server_context  # cryptography only when TLS is asked for

        tls = server_context(Path(args.cert), Path(args.key))
    sink = await start_sink(SinkOptions(delay=args.delay, tls=tls), args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {sink.port}", flush=True)
    last = -1
    while not stop.is_set():
        if sink.stats.messages != last:
            last = sink.stats.messages
            print(f"COUNT {last}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    await sink.close()
    st = sink.stats
    if args.arrivals:
        _write_arrivals(Path(args.arrivals), st)
    summary = {
        "connections": st.connections,
        "flights": st.flights,
        "messages": st.messages,
        "bytes": st.bytes,
        "tls_sessions": st.tls_sessions,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print("STATS " + json.dumps(summary), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sink_process")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0, help="seconds before answering a flight")
    p.add_argument("--cert", default="")
    p.add_argument("--key", default="")
    p.add_argument("--arrivals", default="")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = p.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
