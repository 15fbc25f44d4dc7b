"""A replica's durable shard state next to its hot copy: what it follows from the leader (admitted by epoch, then
journaled), what a new leader recovers, and the work a stepped-down leader hands to the next one. No ROS here."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from fleet_core.model import Command, CommandResult
from fleet_core.replica import ShardReplica
from fleet_core.shard_journal import GateVerdict, JournalGate, ShardJournal, SubmissionRecord

STATE_ROOT_ENV = 'FLEETLANES_STATE_DIR'


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
        self._commands: list[Command] = []
        self._results: list[CommandResult] = []
        for agent, seq in journal.max_seqs().items():
            replica.seed_seq(agent, seq)
        replica.on_lease(journal.max_epoch())

    # -- following ---------------------------------------------------------------------------------------

    def on_lease(self, epoch: int, leader_id: str) -> None:
        if leader_id != self.own_id and epoch > self.gate.epoch:
            # A new leader (after a failover, or a cold restart of the shard): it may not know everything this
            # replica's journal holds (it followed late, or never), so this replica hands its unfinished work over.
            self.handoff_due = True
        for entry in self.gate.on_lease(epoch):
            self.admit(entry)

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
