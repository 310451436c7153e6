"""Worker leases with fencing, and recovery of dead workers' messages.

Every function here runs on the connection thread. A lease is current while the worker's
row exists with the lease's epoch; recovery deletes the row in the same transaction that
takes the messages back, so the old epoch can never write again.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial

from queues.protocol import Lease, RecoveryReport
from queues.sqlite import locks
from queues.sqlite.connection import transaction
from queues.sqlite.sql import Q


def new_worker_id() -> str:
    """A worker id unique across processes and restarts (also a safe file name)."""
    return f"w{os.getpid()}-{secrets.token_hex(6)}"


def insert_worker(conn: sqlite3.Connection, worker_id: str, lock_path: str, now: float) -> Lease:
    """Allocate the next epoch and register the worker; call inside a write transaction."""
    (epoch,) = conn.execute(Q.next_epoch).fetchone()
    conn.execute(Q.insert_worker, (worker_id, epoch, os.getpid(), now, lock_path))
    return Lease(worker_id=worker_id, epoch=int(epoch))


def is_current(conn: sqlite3.Connection, lease: Lease) -> bool:
    """True while the lease's worker row exists with the lease's epoch."""
    row = conn.execute(Q.worker_epoch, (lease.worker_id,)).fetchone()
    return row is not None and row[0] == lease.epoch


def heartbeat(conn: sqlite3.Connection, lease: Lease, now: float) -> bool:
    """Renew the lease; False when its row is gone or carries another epoch."""
    return conn.execute(Q.heartbeat, (lease.worker_id, lease.epoch, now)).rowcount == 1


def live_workers(conn: sqlite3.Connection, since: float) -> int:
    """Workers whose heartbeat came after `since`."""
    return int(conn.execute(Q.count_live_workers, (since,)).fetchone()[0])


def drop_if_idle(conn: sqlite3.Connection, lease: Lease) -> bool:
    """Unregister the worker when it holds no message in flight; call in a transaction."""
    return conn.execute(Q.drop_idle_worker, (lease.worker_id, lease.epoch)).rowcount == 1


@dataclass(frozen=True, slots=True)
class _WorkerRow:
    worker_id: str
    epoch: int
    heartbeat_at: float
    lock_path: str | None


def recover(
    conn: sqlite3.Connection,
    *,
    now: float,
    lease_ttl: float,
    is_own: Callable[[str], bool],
    retry_streams: Collection[str],
) -> RecoveryReport:
    """Take over the messages of every dead worker other than our own (`is_own`).

    Dead: its lock file could be locked without waiting; or, when there is no lock file
    to probe, its heartbeat is older than `lease_ttl`. Each dead worker is handled in its
    own transaction that first deletes its row (worker_id AND epoch): when two processes
    recover at once, exactly one of them gets the row and moves the messages.
    """
    rows = [_WorkerRow(*row) for row in conn.execute(Q.list_workers)]
    workers = requeued = ambiguous = 0
    streams = json.dumps(sorted(retry_streams))
    for row in rows:
        if is_own(row.worker_id):
            continue
        with locks.probe(row.lock_path) as liveness:
            if liveness is locks.Liveness.ALIVE:
                continue
            if liveness is locks.Liveness.UNKNOWN and row.heartbeat_at + lease_ttl > now:
                continue
            moved = transaction(conn, partial(_take_over, row=row, now=now, streams=streams))
            if moved is None:
                continue  # another process recovered it first
            locks.remove(row.lock_path)
            workers += 1
            requeued += moved[0]
            ambiguous += moved[1]
    return RecoveryReport(workers=workers, requeued=requeued, ambiguous=ambiguous)


def _take_over(
    conn: sqlite3.Connection, *, row: _WorkerRow, now: float, streams: str
) -> tuple[int, int] | None:
    """(requeued, ambiguous), or None when the worker row was already gone."""
    if conn.execute(Q.delete_worker, (row.worker_id, row.epoch)).rowcount != 1:
        return None
    args = (row.worker_id, row.epoch, now)
    requeued = conn.execute(Q.recover_sending, args).rowcount
    requeued += conn.execute(Q.recover_committing_retry, (*args, streams)).rowcount
    conn.execute(Q.recovered_event, args)  # what is still committing now is held
    ambiguous = conn.execute(Q.recover_committing_hold, args).rowcount
    return requeued, ambiguous
