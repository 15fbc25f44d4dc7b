"""A replica's durable shard state next to its hot copy: what it follows from the leader (admitted by epoch, then
journaled), what a new leader recovers, and the work a stepped-down leader hands to the next one. No ROS here."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from fleet_core.model import Command, CommandResult
from fleet_core.replica import ShardReplica
from fleet_core.shard_journal import (
    GateVerdict,
    JournalGapDetector,
    JournalGate,
    ShardJournal,
    SubmissionRecord,
    journal_entry_key,
)

STATE_ROOT_ENV = 'FLEETLANES_STATE_DIR'

SNAPSHOT_END_KIND = 'snapshot_end'
"""Kind of the marker a leader publishes on the handoff topic after the unfinished work it sends to its followers (at
takeover, and to each follower that joins later); a follower answers with the same marker under its own id. An empty
command_id tells it from a command; agent_id carries the sender's replica id."""

SNAPSHOT_REQUEST_KIND = 'snapshot_request'
"""Kind of the marker a follower that found a gap in the journal stream publishes on the handoff topic (empty
command_id, agent_id its replica id, epoch the lease holder's): the leader answers with a snapshot, as for a follower
that joined late, and stops counting it as caught up until it answers that snapshot's marker."""

SNAPSHOT_REQUEST_EVERY_SEC = 1.0
"""How often a follower with an open gap asks again (a request or its snapshot may be lost, or the leader busy)."""

MARKER_WAIT_SEC = 2.0
"""How long a follower of a new leader waits for that leader's takeover marker before it asks for a snapshot: the
marker travels on a volatile topic, and one published before the follower discovered the leader is lost to it."""

UNCAUGHT_TAKEOVER_LEASES = 4.0
"""A replica that is not caught up still takes over once the leader's lease has been gone this many lease periods."""


def may_take_over(*, caught_up: bool, lease_seen: bool, lapse_sec: float, lease_sec: float) -> bool:
    """Whether a replica that saw the lease lapse may lead now. A replica that is not caught up with the leader it
    followed (started late and got no snapshot yet) lacks work the leader accepted: it waits, so that a caught-up
    standby (or the old leader coming back) wins instead. It never waits forever: a shard must not stay leaderless
    because no replica could catch up (the leader died before sending its snapshot; every standby started late), so
    after UNCAUGHT_TAKEOVER_LEASES lease periods it leads anyway and recovers from the durable journals, the other
    replicas' hand-overs and the agents. A replica that never saw a lease (a cold start of the shard) had no leader
    to catch up with: the first-lease wait decides for it."""
    if caught_up or not lease_seen:
        return True
    return lapse_sec >= UNCAUGHT_TAKEOVER_LEASES * lease_sec


def default_state_dir(site_id: str, shard_id: str, orchestrator_id: str) -> Path:
    """$FLEETLANES_STATE_DIR (else ~/.fleetlanes)/shards/<site>/<shard>/<orchestrator_id>."""
    root = Path(os.environ.get(STATE_ROOT_ENV) or Path.home() / '.fleetlanes')
    return root / 'shards' / site_id / shard_id / orchestrator_id


class DurableShard:
    """Feeds the hot copy and the journal from the replicated streams; only the current lease holder's epoch is
    admitted (JournalGate). A standby's writes are batched and committed by `persist()` once per tick: the leader
    already holds them durably, so a standby that crashes between ticks loses nothing the shard needs."""

    def __init__(self, journal: ShardJournal, replica: ShardReplica, *, own_id: str) -> None:
        self.journal = journal
        self.replica = replica
        self.own_id = own_id
        self.gate: JournalGate[Command | SubmissionRecord] = JournalGate()
        self.handoffs_rejected = 0
        self.handoff_due = False
        self.caught_up = False
        """This replica holds the leader's unfinished work: it followed the leader's takeover (the takeover's
        journal) or got its snapshot. False from start until then; True while this replica leads."""
        self.answer_due = 0
        """The epoch of a leader's marker this replica took and has not answered yet (0: none)."""
        self._held_marker: tuple[int, str, int, str] | None = None
        self.gap = JournalGapDetector()
        """Counts the leader's journal stream against its leases (a gap mid-run makes this replica not caught up)."""
        self.gap_open = ''
        """Why this replica is waiting for a snapshot after a gap ('' when none is open)."""
        self._requested_at = -1e18
        self._new_leader_at: float | None = None
        """When the lease of a leader whose marker this replica has not taken yet was first seen (None: none)."""
        self._commands: list[Command] = []
        self._results: list[CommandResult] = []
        for agent, seq in journal.max_seqs().items():
            replica.seed_seq(agent, seq)
        replica.on_lease(journal.max_epoch())

    # -- following ---------------------------------------------------------------------------------------

    def on_lease(self, epoch: int, leader_id: str, *, written: int | None = None, now: float = 0.0) -> None:
        """A lease of the lease holder; `written`: the journal entries it says it published in its epoch."""
        if written is not None and leader_id != self.own_id:
            self.gap.on_lease(epoch, written, now)
        if leader_id != self.own_id and epoch > self.gate.epoch:
            # A new leader (after a failover, or a cold restart of the shard): it may not know everything this
            # replica's journal holds (it followed late, or never), so this replica hands its unfinished work over.
            self.handoff_due = True
            # And this replica holds the new leader's work only once it takes its marker (below, when held; or
            # asked for: snapshot_request_due). What it held of its own leadership or an older one is not enough.
            self.caught_up = False
            self._new_leader_at = now
        for entry in self.gate.on_lease(epoch):
            self.admit(entry)
        if self._held_marker is not None and self._held_marker[0] <= self.gate.epoch:
            held, self._held_marker = self._held_marker, None
            self.on_snapshot_end(held[0], leader_id=held[1], current_leader=leader_id, covered=held[2], last=held[3])

    def on_snapshot_end(
        self, epoch: int, *, leader_id: str, current_leader: str, covered: int = 0, last: str = ''
    ) -> bool:
        """The leader's end-of-snapshot marker: only the lease holder's, in its epoch, catches this replica up (a
        snapshot's entries come before it on the same topic from the same writer). A marker of a newer epoch than
        the lease known here (a takeover's marker may overtake its lease, another topic) is held until that lease.
        True when taken: the replica then answers with its own marker (`answer_due`). `covered`: the journal entries
        the leader had published in its epoch when it sent the marker (the gap count restarts from there); `last`: the
        key of the last of them."""
        if not leader_id or leader_id == self.own_id:
            return False
        if epoch > self.gate.epoch:
            self._held_marker = (epoch, leader_id, covered, last)
            return False
        if epoch != self.gate.epoch or leader_id != current_leader:
            return False
        self.caught_up = True
        self.answer_due = epoch
        self.gap.on_snapshot(epoch, covered, last)
        self.gap_open = ''
        self._new_leader_at = None
        return True

    def led(self) -> None:
        """This replica took over: it holds everything it leads with (and keeps it when it steps down, until it
        follows a newer leader)."""
        self.caught_up = True
        self.gap_open = ''
        self._new_leader_at = None

    def on_journal_entry(self, command: Command) -> GateVerdict:
        """An entry of the leader's journal topic: counted for gap detection, then admitted like any entry."""
        self.gap.on_entry(command.epoch, journal_entry_key(command))
        return self.on_entry(command)

    def check_gap(self, now: float) -> str:
        """Once per tick while following: the reason when a gap in the journal stream is found now ('' otherwise).
        This replica is then not caught up (not eligible to lead at once, not counted by the leader) until the
        snapshot it asks for (`snapshot_request_due`) has been taken."""
        reason = self.gap.check(now)
        if reason:
            self.caught_up = False
            self.gap_open = reason
            self._requested_at = -1e18
        return reason

    def snapshot_request_due(self, now: float) -> bool:
        """True when this replica should ask the leader for a snapshot now: a gap is open, or a new leader's marker
        has not come within MARKER_WAIT_SEC of its lease; every SNAPSHOT_REQUEST_EVERY_SEC until a snapshot's
        marker is taken."""
        marker_late = self._new_leader_at is not None and now - self._new_leader_at >= MARKER_WAIT_SEC
        if not (self.gap_open or marker_late) or now - self._requested_at < SNAPSHOT_REQUEST_EVERY_SEC:
            return False
        self._requested_at = now
        return True

    def on_entry(self, entry: Command | SubmissionRecord) -> GateVerdict:
        verdict = self.gate.offer(entry.epoch, entry)
        if verdict is GateVerdict.ACCEPTED:
            self.admit(entry)
        return verdict

    def admit(self, entry: Command | SubmissionRecord) -> None:
        if isinstance(entry, SubmissionRecord):
            # Rare, and what a repeated request is judged by: committed at once, not with the tick's batch.
            self.journal.accept([], now=entry.stamp, request=entry, sync=False)
        else:
            self.replica.on_journal(entry)
            self._commands.append(entry)

    def on_outcomes(self, results: Iterable[CommandResult]) -> None:
        for result in results:
            self.replica.on_outcome(result.command_id)
            self._results.append(result)

    def on_handoff(self, epoch: int, *, leading_epoch: int) -> bool:
        """Work handed over by another replica (a leader that stepped down, or a follower's journal when a new leader
        appears) carries the epoch it was accepted or last delivered under: only an epoch below the newest known
        here (ours while leading) is taken, never the current or a future one; False (counted) otherwise."""
        newest = max(self.gate.epoch, leading_epoch, self.journal.max_epoch())
        if not 0 < epoch < newest:
            self.handoffs_rejected += 1
            return False
        return True

    def handoff(self) -> tuple[list[Command], list[SubmissionRecord]]:
        """This replica's unfinished commands and recent request records, to hand to a new leader."""
        self.handoff_due = False
        return self.journal.unfinished(), self.journal.recent_requests()

    def persist(self, now: float) -> None:
        """Commit what was followed since the last call (a standby's batch)."""
        commands, self._commands = self._commands, []
        results, self._results = self._results, []
        if commands:
            self.journal.accept(commands, now=now, sync=False)
        if results:
            self.journal.record(results=results)

    # -- leading -----------------------------------------------------------------------------------------

    def recover(self, hot_pending: Iterable[Command]) -> list[Command]:
        """Every unfinished command known here: the journal's and the hot copy's, minus any with a recorded outcome
        (the journal keeps outcomes even of commands this replica never saw accepted)."""
        found = {c.command_id: c for c in self.journal.unfinished()}
        for command in hot_pending:
            found.setdefault(command.command_id, command)
        finished = self.journal.finished_ids(found)
        return sorted((c for cid, c in found.items() if cid not in finished), key=lambda c: (c.issued_at, c.command_id))
