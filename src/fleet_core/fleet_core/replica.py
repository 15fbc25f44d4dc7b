"""A standby orchestrator's hot copy of its shard: unfinished commands from the leader's journal, minus those
with an announced outcome, plus the sequence and epoch high-water marks needed to take over safely."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fleet_core.model import Command

SEQ_GAP = 1000
"""A new leader numbers each agent's commands from the highest seq it knows of + SEQ_GAP, above anything the
old leader may have sent but nobody has acknowledged yet. Seqs are only compared, never counted."""


@dataclass(frozen=True, slots=True)
class TakeoverPlan:
    epoch: int
    seq_base: dict[str, int]
    pending: tuple[Command, ...]


class ShardReplica:
    """Fed from the shard's journal, outcome, ack, heartbeat and lease streams."""

    def __init__(self, agents: Iterable[str]) -> None:
        self._pending: dict[str, Command] = {}
        self._finished: set[str] = set()
        self._seq = dict.fromkeys(agents, 0)
        self.max_epoch = 0

    def on_journal(self, command: Command) -> None:
        if command.command_id not in self._finished:
            self._pending[command.command_id] = command
        self._see(command.agent_id, command.seq, command.epoch)

    def on_outcome(self, command_id: str) -> None:
        self._pending.pop(command_id, None)
        self._finished.add(command_id)

    def on_ack(self, agent_id: str, command_id: str, seq: int) -> bool:
        """An ack raises the agent's seq high-water only when it names a followed command sent to that agent with
        that seq: anyone can publish on the ack topic, and a forged huge seq would push the next leader's seq base
        towards overflow. Its epoch is never taken (fencing is the dispatcher's business). True when taken."""
        command = self._pending.get(command_id)
        if command is None or command.agent_id != agent_id or command.seq != seq:
            return False
        self._see(agent_id, seq, 0)
        return True

    def seed_seq(self, agent_id: str, seq: int) -> None:
        """A seq this replica recorded itself (its durable journal): trusted as it is."""
        self._see(agent_id, seq, 0)

    def on_heartbeat(self, agent_id: str, last_applied_seq: int, highest_epoch_seen: int) -> None:
        self._see(agent_id, last_applied_seq, highest_epoch_seen)

    def on_lease(self, epoch: int) -> None:
        self.max_epoch = max(self.max_epoch, epoch)

    def _see(self, agent_id: str, seq: int, epoch: int) -> None:
        if agent_id in self._seq:
            self._seq[agent_id] = max(self._seq[agent_id], seq)
        self.max_epoch = max(self.max_epoch, epoch)

    def handed_over(self) -> None:
        """This orchestrator now leads: its dispatcher owns the pending commands (it ignores its own journal)."""
        self._pending.clear()

    def restore(self, commands: Iterable[Command]) -> None:
        """Stepping down: the commands the dispatcher still owed are followed again."""
        for command in commands:
            self.on_journal(command)

    @property
    def pending(self) -> tuple[Command, ...]:
        return tuple(self._pending.values())

    def takeover(self) -> TakeoverPlan:
        return TakeoverPlan(
            epoch=self.max_epoch + 1,
            seq_base={agent: seq + SEQ_GAP for agent, seq in self._seq.items()},
            pending=tuple(sorted(self._pending.values(), key=lambda c: (c.issued_at, c.command_id))),
        )
