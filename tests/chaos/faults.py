"""The chaos sink's fault plan: which fault (if any) hits the n-th envelope of a message.

Deterministic from (seed, message id, n): no shared random state, so any process that knows
the seed can say what the sink did and why. Faults hit only the first `max_faulty`
envelopes of a message, so that once the harness stops killing workers the run converges.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fault:
    """One kind of misbehaviour at one point of the SMTP dialogue.

    `phase`: mail, rcpt, data (the DATA command), body (while the body arrives) or dot.
    `action`: a reply line, "drop" (close the connection), "silent" (never answer; the
    client's timeout ends it), or "slow" (answer normally, late).
    `ambiguous`: the client may have written the final dot and got no reply, so the
    engine must not resend the message (it becomes `ambiguous`).
    """

    name: str
    phase: str
    action: str
    weight: int
    ambiguous: bool = False


FAULTS: tuple[Fault, ...] = (
    Fault("mail_421", "mail", "421 4.3.2 chaos: try again later", 3),
    Fault("rcpt_421", "rcpt", "421 4.3.2 chaos: try again later", 3),
    Fault("data_421", "data", "421 4.3.2 chaos: try again later", 3),
    Fault("rcpt_511", "rcpt", "550 5.1.1 chaos: no such user", 1),
    Fault("dot_451", "dot", "451 4.3.0 chaos: temporary failure", 3),
    Fault("dot_554", "dot", "554 5.6.0 chaos: content rejected", 1),
    Fault("dot_571", "dot", "550 5.7.1 chaos: blocked by policy", 2),
    Fault("drop_data", "data", "drop", 2),
    # The client writes body and dot in one go: a drop while the body arrives looks, from
    # the client, exactly like a drop after the dot. Ambiguous, though nothing arrived.
    Fault("drop_body", "body", "drop", 1, ambiguous=True),
    Fault("drop_dot", "dot", "drop", 1, ambiguous=True),
    Fault("silent_dot", "dot", "silent", 1, ambiguous=True),
    Fault("slow_mail", "mail", "slow", 2),
    # Slow, but well within smtp.data_timeout; if the machine stalls past it, the engine
    # sees no reply: ambiguous is then the right verdict, hence the flag.
    Fault("slow_dot", "dot", "slow", 2, ambiguous=True),
)
BY_NAME = {f.name: f for f in FAULTS}


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """`rate`: the share of faulty envelopes among a message's first `max_faulty`."""

    seed: int
    rate: float = 0.3
    max_faulty: int = 3
    faults: tuple[Fault, ...] = FAULTS

    def _unit(self, *parts: object) -> float:
        h = hashlib.blake2b(":".join(map(str, (self.seed, *parts))).encode(), digest_size=8)
        return int.from_bytes(h.digest(), "big") / 2.0**64

    def fault_for(self, message_id: str, n: int) -> Fault | None:
        """The fault for envelope `n` (0-based, counted per message at the sink)."""
        if n >= self.max_faulty or not self.faults or self._unit(message_id, n) >= self.rate:
            return None
        total = sum(f.weight for f in self.faults)
        point = self._unit(message_id, n, "kind") * total
        for f in self.faults:
            point -= f.weight
            if point < 0:
                return f
        return self.faults[-1]

    def delay(self, message_id: str, n: int) -> float:
        """How late a "slow" fault answers: 0.2 to 1.0 seconds."""
        return 0.2 + 0.8 * self._unit(message_id, n, "delay")
