"""Worker lock files: how a process on this node proves it is alive.

A worker holds an exclusive `flock` on `<db path>.locks/<worker_id>.lock` for as long as its
process lives; the kernel drops the lock when the process dies, however it dies. Another
process that manages to take the lock without waiting therefore knows the worker is dead.

`flock` locks belong to an open file description, not to a process: two queue objects in
one process exclude each other like two processes do, and closing an unrelated descriptor
of the same file releases nothing (unlike POSIX `fcntl` record locks). A child made by a bare
`fork()` shares the description and keeps the lock alive; descriptors are close-on-exec, so
`exec`ed children do not.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def lock_dir(db_path: Path) -> Path:
    """The folder of the lock files of the database at `db_path`."""
    return db_path.with_name(db_path.name + ".locks")


class OwnLocks:
    """The lock files this queue object holds, one per registered worker."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fds: dict[str, int] = {}

    def acquire(self, worker_id: str) -> Path:
        """Create and lock the worker's file; held until `release`."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{worker_id}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fds[worker_id] = fd
        return path

    def holds(self, worker_id: str) -> bool:
        """True when this object registered `worker_id` and still holds its lock."""
        return worker_id in self._fds

    def release(self, worker_id: str, *, remove_file: bool = False) -> None:
        """Drop one lock. The file stays unless `remove_file` (the worker row is gone):
        a left file tells recovery, by its free lock, that the worker is gone."""
        fd = self._fds.pop(worker_id, None)
        if fd is None:
            return
        if remove_file:
            (self.directory / f"{worker_id}.lock").unlink(missing_ok=True)
        os.close(fd)

    def release_all(self) -> None:
        """Drop every lock this object holds."""
        for worker_id in list(self._fds):
            self.release(worker_id)


class Liveness(enum.Enum):
    """What probing a worker's lock file tells."""

    ALIVE = "alive"  # someone holds the lock
    DEAD = "dead"  # we took the lock: its holder is gone
    UNKNOWN = "unknown"  # no lock file to probe: fall back to the heartbeat


@contextlib.contextmanager
def probe(lock_path: str | None) -> Iterator[Liveness]:
    """Try the worker's lock without waiting. When the worker is DEAD the lock stays held
    by us for the `with` block, so a concurrent prober sees ALIVE and leaves it to us."""
    if not lock_path:
        yield Liveness.UNKNOWN
        return
    try:
        # Never O_CREAT: a missing file must stay missing (UNKNOWN), not look like a free lock.
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        yield Liveness.UNKNOWN
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield Liveness.ALIVE
            return
        yield Liveness.DEAD
    finally:
        os.close(fd)


def remove(lock_path: str | None) -> None:
    """Delete a dead worker's lock file (called while its lock is held by the prober)."""
    if lock_path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
