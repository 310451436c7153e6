"""The `maildispatch` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple, TypeVar

from dispatcher.config import Config, ConfigError, load_config
from dispatcher.telemetry.logs import configure_logging
from queues.accounts import AccountError
from queues.errors import QueueError

T = TypeVar("T")
log = logging.getLogger("maildispatch")
DEFAULT_CONFIG = "config.toml"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop (the production loop)."""
    import uvloop

    return uvloop.run(coro)


def _find_config(path: str | None) -> Path:
    if path:
        return Path(path)
    here = Path(DEFAULT_CONFIG)
    if here.exists():
        return here
    # Installed from a checkout: fall back to the repository's config.toml.
    return Path(__file__).resolve().parents[2] / DEFAULT_CONFIG  # dispatcher/cli/main.py


def _load(path: str | None) -> Config:
    config = load_config(_find_config(path))
    configure_logging(config.log)
    return config


def _watched(task: asyncio.Task[Any]) -> None:
    """A side task that ended on its own: said in the log, never silently."""
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger("maildispatch").error("%s stopped: %r", task.get_name(), task.exception())


# -- demo --------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from dispatcher.cli.demo import run_demo

    config = _load(args.config)
    console = Console(stderr=args.json)
    n = args.messages

    async def main() -> Any:
        if args.json or not console.is_terminal:
            return await run_demo(config, n)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("sending", total=n)

            def progress(stats: Any) -> None:
                bar.update(task, completed=sum(stats.outcomes.values()))

            return await run_demo(config, n, progress)

    report = _run(main())
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0 if report.ok else 1
    table = Table(title=f"maildispatch demo: {n} messages", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("delivered", str(report.delivered))
    table.add_row("deduplicated at enqueue", str(report.deduplicated))
    table.add_row("received at sink", str(report.at_sink))
    table.add_row("duplicates at sink", str(report.duplicates_at_sink))
    table.add_row("DKIM signatures verified", f"{report.dkim_verified}/{report.dkim_signatures}")
    for ip, c in report.by_ip.items():
        table.add_row(f"  from {ip}", f"{c} ({c / max(1, report.at_sink):.1%})")
    for dom, c in report.by_platform_domain.items():
        table.add_row(f"  via {dom}", f"{c} ({c / max(1, report.at_sink):.1%})")
    table.add_row("messages/s", f"{report.messages_per_second:.0f}")
    table.add_row("CPU s per 1,000 messages", f"{report.cpu_seconds_per_1000:.3f}")
    console.print(table)
    for c in report.checks:
        mark = "[green]ok[/green]" if c.ok else "[red]FAILED[/red]"
        console.print(f"{mark} {c.name}: {c.detail}")
    console.print(
        f"demo: {report.delivered} delivered, {report.deduplicated} deduplicated, "
        f"{report.duplicates_at_sink} duplicates at sink, "
        f"{report.messages_per_second:.0f} msg/s, {report.cpu_seconds_per_1000:.3f} CPU s/1000 "
        f"-> {'OK' if report.ok else 'FAILED'}"
    )
    return 0 if report.ok else 1


# -- run ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if args.processes > 1:
        return _run_processes(args)

    async def main() -> int:
        from dispatcher.engine.reload import ConfigWatcher

        stop, now = asyncio.Event(), asyncio.Event()
        stopped_at: list[float] = []
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            # The first SIGTERM/SIGINT stops gracefully; a second one means now.
            if stop.is_set():
                now.set()
                return
            stopped_at.append(time.monotonic())
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        rt = await _open_patiently(config, stop)
        if rt is None:
            return 0
        if config.metrics.listen:
            rt.metrics.serve(config.metrics.listen)
        # Live reload: SIGHUP and edits of the file; an invalid edit is logged and rejected.
        watcher = ConfigWatcher(_find_config(args.config), rt.apply_config)
        watch = asyncio.create_task(watcher.run(), name="config-watcher")
        watch.add_done_callback(_watched)
        loop.add_signal_handler(signal.SIGHUP, watcher.trigger)
        try:
            stats = await rt.run(drain=args.drain, stop=stop, now=now)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
            # Handing back the lease belongs in shutdown_timeout too; past it the lease
            # expires by itself (PostgreSQL) or its lock dies with the process (SQLite).
            left = 30.0
            if stopped_at:
                left = stopped_at[0] + config.dispatch.shutdown_timeout - time.monotonic()
            try:
                await asyncio.wait_for(rt.close(), timeout=max(0.1, left))
            except TimeoutError:
                logging.getLogger("maildispatch").warning("lease release cut short")
        print(
            f"run: {dict(stats.outcomes)} in {stats.elapsed:.1f}s",
            file=sys.stderr,
        )
        return 0

    return _run(main())


async def _open_patiently(config: Config, stop: asyncio.Event) -> Any:
    """Open the runtime, waiting for an unreachable queue (a database restart) to return."""
    from dispatcher.engine.runtime import Runtime

    delay = 0.2
    while True:
        try:
            return await Runtime.open(config)
        except (ConnectionError, OSError, TimeoutError) as e:
            if delay == 0.2:
                logging.getLogger("maildispatch").warning("queue unavailable (%s): waiting", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            if stop.is_set():
                return None
            delay = min(delay * 2, 5.0)


def _run_processes(args: argparse.Namespace) -> int:
    """N worker processes on one node; each is `maildispatch run` with one process."""
    import subprocess

    cmd = [sys.executable, "-m", "dispatcher.cli", "run", "--processes", "1"]
    if args.config:
        cmd += ["--config", args.config]
    if args.drain:
        cmd.append("--drain")
    procs = [subprocess.Popen(cmd) for _ in range(args.processes)]

    def forward(sig: int, _frame: Any) -> None:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # each worker reloads its config
    codes = [p.wait() for p in procs]
    return max(codes)


# -- enqueue -----------------------------------------------------------------------------


class _TooLong(NamedTuple):
    """A line over the size limit, skipped without being held in memory."""

    size: int


def _lines(fh: IO[bytes], limit: int) -> Iterator[tuple[int, bytes | _TooLong]]:
    """Non-blank lines with their numbers; a line over `limit` bytes is read past in
    bounded chunks and comes back as `_TooLong` (its neighbours are unaffected)."""
    n = 0
    while True:
        line = fh.readline(limit + 1)
        if not line:
            return
        n += 1
        if len(line) > limit and not line.endswith(b"\n"):
            size = len(line)
            while True:
                rest = fh.readline(1 << 20)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield n, _TooLong(size)
        elif line.strip():
            yield n, line


def _printable(text: str) -> str:
    """Control characters and lone surrogates escaped: one error stays one output line."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def cmd_enqueue(args: argparse.Namespace) -> int:
    """Exit 0: every line stored (or found stored); 1: some lines refused (each reported as
    `line N: field: reason` on stderr, the others stored); 2: usage, config or I/O error."""
    from dispatcher.engine.runtime import Runtime
    from dispatcher.message.intake import MessageError, parse_payload
    from queues.errors import IdempotencyConflict, InvalidQueueInput
    from queues.protocol import NewMessage

    config = _load(args.config)
    # A line cannot hold a message under the size limit if it is much larger than it:
    # JSON escapes at most six bytes per character.
    limit = 6 * config.dispatch.max_message_bytes + (1 << 20)
    errors = 0
    try:
        fh: IO[bytes] = sys.stdin.buffer if args.path == "-" else open(args.path, "rb")  # noqa: SIM115
    except OSError as e:
        print(f"cannot read {_printable(args.path)}: {e.strerror or e}", file=sys.stderr)
        return 2

    def bad(line_no: int, field: str, text: str) -> None:
        nonlocal errors
        errors += 1
        print(f"line {line_no}: {_printable(field)}: {_printable(text)}", file=sys.stderr)

    def stored(r: Any) -> None:
        print(f"{r.id}{'' if r.created else ' duplicate'}")

    async def main() -> None:
        rt = await Runtime.open(config)
        try:
            pending: list[tuple[int, NewMessage]] = []

            async def flush() -> None:
                if not pending:
                    return
                try:
                    for r in await rt.queue.enqueue_many([m for _, m in pending]):
                        stored(r)
                except (IdempotencyConflict, InvalidQueueInput):
                    # Find the refused line(s); store the others one by one.
                    for line_no, m in pending:
                        try:
                            (r,) = await rt.queue.enqueue_many([m])
                            stored(r)
                        except IdempotencyConflict as e:
                            bad(line_no, "idempotency_key", str(e))
                        except InvalidQueueInput as e:
                            bad(line_no, e.field.rpartition(".")[2], e.reason)
                pending.clear()

            now = time.time()
            for line_no, line in _lines(fh, limit):
                try:
                    if isinstance(line, _TooLong):
                        raise MessageError(
                            field="payload",
                            code="too_large",
                            reason=f"the line is over {limit} bytes",
                        )
                    # parse_payload, not json.loads: duplicate keys, NaN, bad UTF-8, depth
                    # and number size are refused as the other entry points refuse them.
                    payload = parse_payload(line)
                    pending.append((line_no, rt.factory.build(payload, now=now)))
                except MessageError as e:
                    bad(line_no, e.field, e.reason)
                    continue
                except Exception as e:
                    # A bug, not the input's fault: this line is reported, the rest go on.
                    log.debug("line %d could not be processed", line_no, exc_info=True)
                    bad(line_no, "payload", f"could not be processed ({type(e).__name__})")
                    continue
                if len(pending) >= 1000:
                    await flush()
            await flush()
        finally:
            await rt.close()

    try:
        _run(main())
    except OSError as e:
        print(f"I/O error: {_printable(str(e))}", file=sys.stderr)
        return 2
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()
    return 1 if errors else 0


# -- status, config, sink, dkim, db ------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from dispatcher.engine.runtime import make_queue

    config = _load(args.config)

    async def main() -> Any:
        q = make_queue(config)
        await q.open()
        try:
            return await q.counts(), await q.held_count()
        finally:
            await q.close()

    counts, held = _run(main())
    data = {
        "by_state": counts.by_state,
        "by_pool": counts.by_pool,
        "by_source_ip": counts.by_source_ip,
        "held": held,
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("state        count")
    for state, c in sorted(counts.by_state.items()):
        print(f"{state:<12} {c}")
    if held:
        print(f"held (ambiguous, may have been delivered): {held}; see `maildispatch held`")
    for title, group in (("pool", counts.by_pool), ("source IP", counts.by_source_ip)):
        for key, states in sorted(group.items()):
            parts = ", ".join(f"{s} {c}" for s, c in sorted(states.items()))
            print(f"{title} {key}: {parts}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from dispatcher.dkim.store import KeyStore

    config = load_config(args.file)
    if not args.skip_keys:
        KeyStore.load(config.dkim, allow_insecure=config.security.allow_insecure_permissions)
    print(
        f"{args.file}: ok ({len(config.accounts)} accounts, {len(config.pools)} pools, "
        f"{sum(len(p.ips) for p in config.pools)} source IPs, {len(config.dkim.keys)} DKIM keys)"
    )
    return 0


def cmd_config_diff(args: argparse.Namespace) -> int:
    from dispatcher.config.diff import diff, fingerprint

    old, new = load_config(args.old), load_config(args.new)
    changes = diff(old, new)
    print(f"--- {args.old} ({fingerprint(old)})")
    print(f"+++ {args.new} ({fingerprint(new)})")
    for change in changes:
        print(change)
    if not changes:
        print("no changes")
    return 0


def cmd_sink(args: argparse.Namespace) -> int:
    from dispatcher.cli.sink import serve_forever

    async def main() -> None:
        task = asyncio.ensure_future(
            serve_forever(args.listen, Path(args.record) if args.record else None, not args.quiet)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    _run(main())
    return 0


def cmd_dkim(args: argparse.Namespace) -> int:
    from dispatcher.dkim.keys import keygen
    from dispatcher.dkim.status import status_report, status_report_dict

    if args.dkim_cmd == "keygen":
        try:
            path, record = keygen(
                args.domain,
                args.selector,
                key_type=args.type,
                bits=args.bits,
                out_dir=Path(args.out),
            )
        except (ValueError, FileExistsError) as e:
            print(f"dkim keygen: {e}", file=sys.stderr)
            return 2
        print(f"private key written to {path} (mode 0600)")
        print("publish this DNS TXT record:")
        print(record)
        return 0
    config = _load(args.config)
    if args.json:
        print(json.dumps(status_report_dict(config, time.time()), indent=2))
    else:
        print(status_report(config, time.time()))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from dispatcher.engine.runtime import open_store, seed_accounts

    config = _load(args.config)

    async def seed() -> list[str]:
        queue = await open_store(config)  # on SQLite this creates the schema and seeds
        try:
            return await seed_accounts(queue, config)
        finally:
            await queue.close()

    if config.queue.backend != "postgres":
        print("db migrate: queue.backend is sqlite; its schema is created on open", file=sys.stderr)
        _run(seed())
        return 0
    from queues.postgres.migrate import migrate

    version = _run(migrate(config.queue.dsn))
    print(f"schema at version {version}")
    inserted = _run(seed())
    print(f"accounts seeded from config: {len(inserted)} new", file=sys.stderr)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from dispatcher.api.server import serve

    serve(_load(args.config), args.listen)
    return 0


def cmd_accounts(args: argparse.Namespace) -> int:
    from dispatcher.cli.accounts import run

    return _run(run(args, _load(args.config)))


def cmd_held(args: argparse.Namespace) -> int:
    from dispatcher.cli.held import run

    return _run(run(args, _load(args.config)))


def cmd_events(args: argparse.Namespace) -> int:
    from dispatcher.cli.events import event_dict, event_line, tail
    from dispatcher.engine.runtime import make_queue

    config = _load(args.config)

    def out(e: Any) -> None:
        print(json.dumps(event_dict(e)) if args.json else event_line(e), flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        q = make_queue(config)
        await q.open()
        try:
            await tail(q, out, lines=args.lines, follow=not args.no_follow, stop=stop)
        finally:
            await q.close()

    _run(main())
    return 0


def _until_signal(run: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(stop)

    _run(main())


def cmd_relay(args: argparse.Namespace) -> int:
    from dispatcher.events.relay import serve_relay

    config = _load(args.config)
    _until_signal(lambda stop: serve_relay(config, stop))
    return 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    from dispatcher.events.sender import serve_webhooks

    config = _load(args.config)
    _until_signal(lambda stop: serve_webhooks(config, stop))
    return 0


def cmd_bench(argv: list[str]) -> int:
    from bench.cli import main as bench_main

    return bench_main(argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maildispatch", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="run the engine end to end on the embedded default")
    d.add_argument("--messages", type=int, default=10_000)
    d.add_argument("--json", action="store_true")
    d.add_argument("--config")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="dispatch until stopped")
    r.add_argument("--config")
    r.add_argument("--drain", action="store_true", help="exit once nothing is due")
    r.add_argument("--processes", type=int, default=1)
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("enqueue", help="enqueue messages from a JSON-lines file (or -)")
    e.add_argument("--config")
    e.add_argument("path")
    e.set_defaults(func=cmd_enqueue)

    s = sub.add_parser("status", help="counts per state, pool and source IP")
    s.add_argument("--config")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    cc = csub.add_parser("check", help="validate a config file")
    cc.add_argument("file")
    cc.add_argument("--skip-keys", action="store_true", help="do not read the DKIM key files")
    cc.set_defaults(func=cmd_config_check)
    cd = csub.add_parser("diff", help="what a reload from OLD to NEW would change")
    cd.add_argument("old")
    cd.add_argument("new")
    cd.set_defaults(func=cmd_config_diff)

    k = sub.add_parser("sink", help="the capture SMTP sink, for local development")
    k.add_argument("--listen", default="127.0.0.1:2525")
    k.add_argument("--record", help="append every message to this file")
    k.add_argument("--quiet", action="store_true")
    k.set_defaults(func=cmd_sink)

    dk = sub.add_parser("dkim", help="DKIM keys")
    dsub = dk.add_subparsers(dest="dkim_cmd", required=True)
    kg = dsub.add_parser("keygen", help="create a key and print its DNS record")
    kg.add_argument("--domain", required=True)
    kg.add_argument("--selector", required=True)
    kg.add_argument("--type", choices=("rsa", "ed25519"), default="rsa")
    kg.add_argument("--bits", type=int, default=2048)
    kg.add_argument("--out", default="state/dkim")
    kg.set_defaults(func=cmd_dkim)
    ks = dsub.add_parser("status", help="selectors per domain and which one signs now")
    ks.add_argument("--config")
    ks.add_argument("--json", action="store_true")
    ks.set_defaults(func=cmd_dkim)

    db = sub.add_parser("db", help="database tools (PostgreSQL backend)")
    dbsub = db.add_subparsers(dest="db_cmd", required=True)
    m = dbsub.add_parser("migrate", help="apply schema migrations")
    m.add_argument("--config")
    m.set_defaults(func=cmd_db)

    a = sub.add_parser("api", help="serve the HTTP API (see docs/api.md)")
    a.add_argument("--config")
    a.add_argument("--listen", help="HOST:PORT (default: [api] listen)")
    a.set_defaults(func=cmd_api)

    from dispatcher.cli.accounts import add_parser as add_accounts

    add_accounts(sub, cmd_accounts)

    from dispatcher.cli.held import add_parser as add_held

    add_held(sub, cmd_held)

    ev = sub.add_parser("events", help="the event outbox")
    evsub = ev.add_subparsers(dest="events_cmd", required=True)
    et = evsub.add_parser("tail", help="print the last events, then follow new ones")
    et.add_argument("--config")
    et.add_argument("--json", action="store_true", help="one JSON object a line")
    et.add_argument("-n", "--lines", type=int, default=20, help="events shown before following")
    et.add_argument("--no-follow", action="store_true", help="print and exit")
    et.set_defaults(func=cmd_events)

    rl = sub.add_parser("relay", help="relay the event outbox to a Redis stream ([events])")
    rl.add_argument("--config")
    rl.set_defaults(func=cmd_relay)

    wh = sub.add_parser("webhooks", help="send events to the accounts' webhook endpoints")
    wh.add_argument("--config")
    wh.set_defaults(func=cmd_webhooks)

    sub.add_parser("bench", help="benchmarks (see bench/README.md)", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    configure_logging()  # [log]'s defaults until a command reads its config
    if args_list[:1] == ["bench"]:
        return cmd_bench(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except AccountError as e:
        print(f"accounts: {e}", file=sys.stderr)
        return 2
    except QueueError as e:
        print(f"queue error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
