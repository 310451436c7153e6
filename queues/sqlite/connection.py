"""One sqlite3 connection owned by one dedicated thread.

sqlite3 calls block (disk I/O, fsync, waiting for the write lock), so none runs on the event
loop: every call is submitted to a single-worker executor that opened the connection and is
the only thread ever to touch it. Writes are `BEGIN IMMEDIATE` transactions (the write lock is
taken up front, so two writers queue on the busy timeout instead of failing to upgrade a read).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from queues.errors import InvalidQueueInput, QueueClosed, QueueError, QueueUnavailable

T = TypeVar("T")

# SQLite result codes that say the store cannot be used right now (QueueUnavailable.code).
_UNAVAILABLE = {
    "SQLITE_BUSY": "busy",
    "SQLITE_LOCKED": "busy",
    "SQLITE_FULL": "disk_full",
    "SQLITE_CANTOPEN": "cannot_open",
    "SQLITE_IOERR": "io_error",
}

SYNCHRONOUS_MODES = frozenset({"FULL", "NORMAL", "EXTRA"})


class CheckpointPolicy:
    """Decides when to run a PASSIVE WAL checkpoint: every `writes` write transactions or
    every `interval` seconds of writing, whichever comes first. A checkpoint copies WAL
    pages into the database file so the WAL does not grow without bound while readers come
    and go; PASSIVE never waits for readers or writers."""

    def __init__(self, writes: int = 200, interval: float = 2.0) -> None:
        self.writes = writes
        self.interval = interval
        self._count = 0
        self._last = time.monotonic()

    def after_write(self) -> bool:
        """Count one committed write; True when a checkpoint is due (and reset)."""
        self._count += 1
        now = time.monotonic()
        if self._count >= self.writes or now - self._last >= self.interval:
            self._count = 0
            self._last = now
            return True
        return False


class SqliteConnection:
    """A WAL-mode connection to `path`, used only from its own thread."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        checkpoint: CheckpointPolicy | None = None,
    ) -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise InvalidQueueInput(
                field="synchronous",
                reason=f"expected one of {sorted(SYNCHRONOUS_MODES)}, got {synchronous!r}",
            )
        self.path = path
        self.synchronous = mode
        self.busy_timeout = busy_timeout
        self._checkpoint = checkpoint or CheckpointPolicy()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self, schema: str | None = None) -> None:
        """Open the connection on its thread and run the idempotent `schema` script in one
        write transaction (so processes starting together create it once)."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-queue")
        try:
            await self._submit(self._connect)
            if schema is not None:
                await self._submit(lambda: self._run_script(schema))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection on its thread and stop the thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.wrap_future(executor.submit(self._disconnect))
        finally:
            executor.shutdown(wait=False)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the connection thread (autocommit: each statement its own
        snapshot, unless `fn` opens a transaction)."""
        return await self._submit(lambda: fn(self._require()))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in one `BEGIN IMMEDIATE` transaction on the connection thread.

        Committed when `fn` returns, rolled back when it raises. The commit has completed
        (and, with synchronous=FULL, reached the disk) before this returns."""
        result = await self._submit(lambda: transaction(self._require(), fn))
        if self._checkpoint.after_write():
            # Queued behind this write on the same thread; the caller does not wait for it.
            executor = self._executor
            if executor is not None:
                executor.submit(self._wal_checkpoint)
        return result

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise QueueClosed("the SQLite queue is not open")
        try:
            return await asyncio.wrap_future(self._executor.submit(fn))
        except sqlite3.OperationalError as e:
            # The file, not the statement: busy past busy_timeout, I/O, disk full.
            primary = "_".join(str(getattr(e, "sqlite_errorname", "")).split("_")[:2])
            code = _UNAVAILABLE.get(primary)  # SQLITE_BUSY_SNAPSHOT -> SQLITE_BUSY
            if code is None:
                raise
            raise QueueUnavailable(f"SQLite queue {self.path}: {e}", code=code) from e

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise QueueClosed("the SQLite queue is not open")
        return self._conn

    def _connect(self) -> None:
        # State folders 0700, the queue file 0600 (it holds every message body): created so
        # before SQLite opens it, which gives its -wal and -shm files the same mode.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        # isolation_level=None: no implicit transactions; we issue BEGIN IMMEDIATE ourselves.
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=True,
            cached_statements=256,
        )
        try:
            mode = _enter_wal(conn, self.busy_timeout)
            if str(mode).lower() != "wal":
                raise QueueError(f"cannot put {self.path} in WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            # Larger than the default 1000 pages: batches of 4 KB bodies would otherwise
            # trigger a checkpoint inside nearly every enqueue commit. The checkpoint
            # policy keeps the WAL short in the background instead.
            conn.execute("PRAGMA wal_autocheckpoint = 16384")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA cache_size = -16000")
            conn.execute("PRAGMA temp_store = MEMORY")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _run_script(self, script: str) -> None:
        conn = self._require()
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nCOMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _wal_checkpoint(self) -> None:
        if self._conn is not None:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


# Columns added to existing tables after their CREATE TABLE first shipped: schema.sql creates
# them in a new file, `add_missing_columns` adds them to an older one (idempotent).
ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "messages": (
        ("reason", "TEXT"),
        ("resends", "INTEGER NOT NULL DEFAULT 0"),
        ("provider", "TEXT"),  # the route key, once a worker routed the message
    ),
}


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """ALTER TABLE ... ADD COLUMN for every ADDED_COLUMNS entry the file lacks."""
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not have:
            continue  # a new file: schema.sql creates the table with every column
        for name, decl in columns:
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn(conn)` in a `BEGIN IMMEDIATE` transaction; only on the connection's thread."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        # Some errors (disk full, I/O) make SQLite roll back on its own.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _enter_wal(conn: sqlite3.Connection, patience: float) -> str:
    """`PRAGMA journal_mode = WAL`, retried: on a new file, a second process switching the
    mode at the same moment gets "database is locked" at once (SQLite's busy handler is not
    consulted for the journal-mode change)."""
    deadline = time.monotonic() + patience
    delay = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)  # on the connection's own thread, never the event loop
            delay = min(delay * 2, 0.2)

