"""A replica's durable shard state next to its hot copy: what it follows from the leader (admitted by epoch, then
journaled), what a new leader recovers, and the work a stepped-down leader hands to the next one. No ROS here."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable
from pathlib import Path

from fleet_core.model import Command, CommandResult
from fleet_core.replica import ShardReplica
from fleet_core.shard_journal import GateVerdict, JournalGate, ShardJournal, SubmissionRecord

STATE_ROOT_ENV = 'FLEETLANES_STATE_DIR'
KNOWN_EPOCHS = 64
"""Lease epochs remembered for judging handed-over work (a handful of failovers' worth)."""


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
        self._epochs: collections.OrderedDict[int, str] = collections.OrderedDict()
        self._commands: list[Command] = []
        self._records: list[SubmissionRecord] = []
        self._results: list[CommandResult] = []
        for agent, seq in journal.max_seqs().items():
            replica.on_ack(agent, seq, 0)
        replica.on_lease(journal.max_epoch())

    # -- following ---------------------------------------------------------------------------------------

    def on_lease(self, epoch: int, leader_id: str) -> None:
        if leader_id != self.own_id and epoch not in self._epochs:
            self._epochs[epoch] = leader_id
            while len(self._epochs) > KNOWN_EPOCHS:
                self._epochs.popitem(last=False)
        for entry in self.gate.on_lease(epoch):
            self.admit(entry)

    def on_entry(self, entry: Command | SubmissionRecord) -> GateVerdict:
        verdict = self.gate.offer(entry.epoch, entry)
        if verdict is GateVerdict.ACCEPTED:
            self.admit(entry)
        return verdict

    def admit(self, entry: Command | SubmissionRecord) -> None:
        if isinstance(entry, SubmissionRecord):
            self._records.append(entry)
        else:
            self.replica.on_journal(entry)
            self._commands.append(entry)

    def on_outcomes(self, results: Iterable[CommandResult]) -> None:
        for result in results:
            self.replica.on_outcome(result.command_id)
            self._results.append(result)

    def on_handoff(self, command: Command, *, leading_epoch: int) -> bool:
        """Work a stepped-down leader handed over. Taken only from an epoch some other replica held a lease for,
        below the newest epoch known here (or below ours while leading); False (counted) otherwise."""
        newest = max(self.gate.epoch, leading_epoch)
        if command.epoch not in self._epochs or command.epoch >= newest:
            self.handoffs_rejected += 1
            return False
        return True

    def persist(self, now: float) -> None:
        """Commit what was followed since the last call (a standby's batch)."""
        commands, self._commands = self._commands, []
        records, self._records = self._records, []
        results, self._results = self._results, []
        if commands:
            self.journal.accept(commands, now=now)
        for record in records:
            self.journal.accept([], now=now, request=record)
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
