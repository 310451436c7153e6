"""Test hooks: stop this worker at a named point so a test can SIGKILL it exactly there.

Disabled unless MAILDISPATCH_STOP_AT names a point (after_claim; after_body: the body written
up to its final dot, the mark not yet asked for; after_mark: durable, the dot not yet written;
after_dot: written, its reply not yet read; after_2xx; before_outcome_write). When reached
(after MAILDISPATCH_STOP_SKIP earlier passes, default 0), the process prints
`maildispatch: stopped at POINT` to stderr and SIGSTOPs itself.
"""

from __future__ import annotations

import os
import signal
import sys

POINTS = frozenset(
    {
        "after_claim",
        "after_body",
        "after_mark",
        "after_dot",
        "after_2xx",
        "before_outcome_write",
    }
)
_ARMED = os.environ.get("MAILDISPATCH_STOP_AT") or None
_skip = int(os.environ.get("MAILDISPATCH_STOP_SKIP", "0") or 0)
if _ARMED is not None and _ARMED not in POINTS:
    raise ValueError(f"MAILDISPATCH_STOP_AT: unknown stop point {_ARMED!r}")


def reached(point: str) -> None:
    """Called at each named point; a no-op unless the environment armed this point."""
    global _skip
    if _ARMED is None or point != _ARMED:
        return
    if _skip > 0:
        _skip -= 1
        return
    sys.stderr.write(f"maildispatch: stopped at {point}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
