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

from dataclasses import dataclass

CATCH_UP_MAX_SEC = 30.0
"""Longest a new leader answers unknown request_ids with 'retry' while waiting for the previous leader's journal:
long enough for a crashed orchestrator (or its site server) to restart and hand over, short enough that a leader
lost for good does not keep the shard from taking new idempotent submissions for long."""

HANDOFF_END = ''
"""request_id of the marker (a SubmissionRecord) that ends a replica's hand-over: trace_id carries its replica id,
epoch the newest epoch it led to the end of its own catch-up (0: none)."""


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
