"""Child processes measured by the OS: CPU and peak RSS come from wait4(2).

Each benchmark side (dispatcher, sink) runs in its own process, so its CPU time is the
kernel's own accounting of that process (all its threads, and its waited-for children),
not an estimate made from inside.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Usage:
    """What the kernel accounted to one finished child."""

    user_s: float
    system_s: float
    exit_code: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.system_s


class Child:
    """A child process (Python unless `python=False`); stdout lines go to `on_line`."""

    def __init__(
        self,
        args: Sequence[str],
        on_line: Callable[[str], None],
        stderr_path: Path,
        env: dict[str, str] | None = None,
        *,
        python: bool = True,
    ) -> None:
        self._stderr = stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *args] if python else list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
            text=True,
        )
        self.stderr_path = stderr_path
        self.usage: Usage | None = None
        self._reader = threading.Thread(target=self._read, args=(on_line,), daemon=True)
        self._reader.start()

    def _read(self, on_line: Callable[[str], None]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            on_line(line.rstrip("\n"))

    def poll(self) -> Usage | None:
        """Reap the child if it has exited (without blocking); its usage, else None."""
        if self.usage is None:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self._finish(status, ru)
        return self.usage

    def wait(self, timeout: float | None = None) -> Usage:
        """Block until the child exits; kill it after `timeout` seconds."""
        if self.usage is None:
            timer = threading.Timer(timeout, self.kill) if timeout else None
            if timer:
                timer.start()
            try:
                _, status, ru = os.wait4(self.proc.pid, 0)
            finally:
                if timer:
                    timer.cancel()
            self._finish(status, ru)
        assert self.usage is not None
        return self.usage

    def _finish(self, status: int, ru: resource.struct_rusage) -> None:
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code  # reaped here, so Popen must not wait for it again
        # ru_maxrss is not used: after vfork it includes the parent's peak (see measure.py).
        self.usage = Usage(ru.ru_utime, ru.ru_stime, code)
        self._reader.join(timeout=5)
        self._stderr.close()

    def terminate(self) -> None:
        if self.usage is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.usage is None:
            self.proc.kill()

    def stderr_tail(self, chars: int = 2000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
