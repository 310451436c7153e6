"""The checker: every enqueued message's fate in the queue against what the sink really got.

Rules (DESIGN.md, "Message states"):
- received (accepted or unacked at the sink) at most once; a `refused` receipt is a
  definite refusal and may be followed by another receipt;
- `delivered` => accepted at the sink;
- accepted or unacked at the sink => `delivered` or `ambiguous`;
- `bounced` / `failed` => never accepted;
- `ambiguous` => an ambiguity-capable fault happened to that message at the sink, or its
  worker was lost in the committing window (recovered: the harness killed or stopped it);
- nothing left in `sending` or `committing`, every enqueued id accounted for.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from queues.protocol import MessageState
from tests.chaos.faults import BY_NAME
from tests.chaos.sink import SinkEvent

_RECEIVED = ("accepted", "unacked")


@dataclass(frozen=True, slots=True)
class Fate:
    """What the queue says about one message; `recovered` = made ambiguous by recovery."""

    state: MessageState
    recovered: bool = False


@dataclass
class Verdict:
    messages: int = 0
    lost: int = 0  # missing, stuck in flight, or "delivered" without reaching the sink
    duplicates: int = 0  # received more than once
    ambiguous: int = 0
    unfinished: int = 0  # still queued or deferred when the run ended
    violations: int = 0  # any other broken rule
    faults: int = 0
    # Held messages the sink never received (nothing of them arrived whole): the cost of
    # the committing window. `recovered`: made ambiguous by recovery of a lost worker.
    unreceived_ambiguous: int = 0
    recovered: int = 0
    recovered_unreceived: int = 0
    states: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.violations or self.unfinished)

    def _note(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)


def check(ids: Iterable[str], fates: Mapping[str, Fate], events: Iterable[SinkEvent]) -> Verdict:
    """Apply the rules above; `fates` holds what the queue returned for `ids`."""
    by_id: dict[str, list[SinkEvent]] = defaultdict(list)
    v = Verdict()
    for e in events:
        if e.fault is not None and (e.ev == "fault" or e.ending is not None):
            v.faults += 1
        if e.id is not None:
            by_id[e.id].append(e)
    seen: set[str] = set()
    for msg_id in ids:
        seen.add(msg_id)
        v.messages += 1
        evs = by_id.get(msg_id, [])
        received = [e for e in evs if e.ev == "receipt" and e.ending in _RECEIVED]
        accepted = [e for e in received if e.ending == "accepted"]
        fate = fates.get(msg_id)
        if fate is None:
            v.lost += 1
            v._note(f"{msg_id}: enqueued but not in the queue")
            continue
        state = fate.state
        v.states[state.value] += 1
        if len(received) > 1:
            v.duplicates += 1
            v._note(f"{msg_id}: received {len(received)} times ({state.value})")
        if state in (MessageState.SENDING, MessageState.COMMITTING):
            v.lost += 1
            v._note(f"{msg_id}: left in {state.value}")
        elif state in (MessageState.QUEUED, MessageState.DEFERRED):
            v.unfinished += 1
            v._note(f"{msg_id}: still {state.value} at the end")
        elif state == MessageState.DELIVERED and not accepted:
            v.lost += 1
            v._note(f"{msg_id}: delivered, but never accepted at the sink")
        if received and state not in (MessageState.DELIVERED, MessageState.AMBIGUOUS):
            if state in (MessageState.QUEUED, MessageState.DEFERRED):
                pass  # already counted as unfinished; a later send would be a duplicate
            else:
                v.violations += 1
                v._note(f"{msg_id}: {received[0].ending} at the sink but {state.value}")
        if state == MessageState.AMBIGUOUS:
            v.ambiguous += 1
            v.unreceived_ambiguous += not received
            v.recovered += fate.recovered
            v.recovered_unreceived += fate.recovered and not received
            explained = fate.recovered or any(
                e.fault is not None and BY_NAME[e.fault].ambiguous for e in evs
            )
            if not explained:
                v.violations += 1
                v._note(f"{msg_id}: ambiguous with no after-dot fault and no lost worker")
    for stray in sorted(set(by_id) - seen):
        v.violations += 1
        v._note(f"{stray}: reached the sink but was never enqueued")
    return v
