"""When a new leader may take an unknown request_id as new. No ROS here.

A request the previous leader accepted (and answered) may be recorded only in that leader's journal: a standby that
started late, or that a crash cut off, never copied it. Until the new leader holds the journal of whoever led the
epoch before its own, it answers an unknown request_id with 'retry' instead of creating new commands (which a robot
would run a second time). It holds that journal when it led that epoch itself, when it followed that leader caught
up (the leader's snapshot), or once that leader, back as a standby, hands its journal over and ends the hand-over
with a marker naming the newest epoch it led (`HANDOFF_END`).

The wait is bounded by CATCH_UP_MAX_SEC: the previous leader may never come back (its host is gone), and a shard
that refuses every new request_id forever is down. Past the bound the leader takes unknown request_ids as new; a
re-sent request that only the lost leader knew may then run twice, which is what the wait makes unlikely (the old
leader's process restarts within seconds on a crash; only a host lost for longer costs that guarantee). Requests
without a request_id are never held back: they carry no idempotency promise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

CATCH_UP_MAX_SEC = 30.0
"""Longest a new leader answers unknown request_ids with 'retry' while waiting for the previous leader's journal:
long enough for a crashed orchestrator (or its site server) to restart and hand over, short enough that a leader
lost for good does not keep the shard from taking new idempotent submissions for long."""

HANDOFF_END = ''
"""request_id of the marker (a SubmissionRecord) that ends a replica's hand-over: trace_id carries its replica id,
epoch the newest epoch it led to the end of its own catch-up (0: none), command_ids the commands it handed over
(HandoffAudit)."""


@dataclass(slots=True)
class CatchUp:
    """A new leader's wait for the journal of the epoch before its own."""

    previous_epoch: int
    """The newest epoch seen before this leader's own (0: none, a first start of the shard)."""
    until: float
    holds_previous: bool

    @classmethod
    def start(cls, *, previous_epoch: int, led_epoch: int, followed: bool, now: float) -> CatchUp:
        """`led_epoch`: the newest epoch this replica led and finished catching up in (its journal holds it);
        `followed`: it followed the previous leader caught up (took its snapshot)."""
        holds = previous_epoch <= 0 or led_epoch >= previous_epoch or followed
        return cls(previous_epoch, now + CATCH_UP_MAX_SEC, holds)

    def on_handoff_end(self, led_epoch: int) -> bool:
        """A replica ended its hand-over, having led up to `led_epoch`: True when that was the previous epoch (this
        leader now holds its journal's request records, which came before the marker on the same topic)."""
        if self.holds_previous or led_epoch < self.previous_epoch:
            return False
        self.holds_previous = True
        return True

    def done(self, now: float) -> bool:
        return self.holds_previous or now >= self.until


HANDOFF_REQUEST_KIND = 'handoff_request'
"""Kind of the marker a leader publishes on the handoff topic (empty command_id, agent_id: the replica asked, epoch:
the leader's) when commands a replica's hand-over listed did not arrive: that replica hands its journal over again."""

HANDOFF_AUDIT_SEC = 2.0
"""How long after a replica's end-of-hand-over marker the commands it lists may still be on their way (they travel
on another topic than the marker); past it, those still missing are asked for again, at most this often."""


@dataclass(slots=True)
class HandoffAudit:
    """A leader's check that every command a replica handed over arrived.

    The commands travel on the handoff topic, which is volatile: a sample published while the publisher already
    counts the new leader's subscription but the new leader has not discovered the publisher yet (discovery is not
    symmetric) is lost. The replica's end-of-hand-over marker (on the request-record topic, which keeps its last
    samples for late joiners) lists the ids it handed; a listed id that this leader neither received nor holds is
    asked for again until it has arrived or this leader no longer leads."""

    received: set[str]
    """Every command id received on the handoff topic while leading (taken or not: the hand-over delivered it)."""
    expected: dict[str, tuple[frozenset[str], float, int]]
    """Per replica: the ids its newest marker listed, when the next check of them is due, and how often it was asked
    for them again."""

    @classmethod
    def start(cls) -> HandoffAudit:
        return cls(set(), {})

    def on_handed(self, command_id: str) -> None:
        self.received.add(command_id)

    def on_end(self, replica_id: str, command_ids: Iterable[str], now: float) -> None:
        """A replica's marker: its newest hand-over replaces what it handed before."""
        ids = frozenset(command_ids)
        if ids:
            asked = self.expected[replica_id][2] if replica_id in self.expected else 0
            self.expected[replica_id] = (ids, now + HANDOFF_AUDIT_SEC, asked)
        else:
            self.expected.pop(replica_id, None)

    def due(self, now: float, held: Callable[[frozenset[str]], set[str]]) -> list[tuple[str, int, int]]:
        """The replicas to ask again now, each with how many of its commands are missing and how often it was asked
        (this time included). `held(ids)`: those of `ids` this leader holds without having received them (pending or
        decided here). A replica whose commands all arrived is done; one still missing some is asked again
        HANDOFF_AUDIT_SEC later."""
        ask = []
        for replica_id, (ids, check_at, asked) in list(self.expected.items()):
            if now < check_at:
                continue
            missing = ids - self.received
            if missing:
                missing -= held(missing)
            if not missing:
                del self.expected[replica_id]
                continue
            self.expected[replica_id] = (ids, now + HANDOFF_AUDIT_SEC, asked + 1)
            ask.append((replica_id, len(missing), asked + 1))
        return ask
