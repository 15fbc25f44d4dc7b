"""Domain objects of the command protocol, mirrored one-to-one by fleet_interfaces messages."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Priority(enum.IntEnum):
    """Command priority; higher is served first. SAFETY bypasses every queue and is never shed."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    SAFETY = 3


class AckStatus(enum.IntEnum):
    """Values of fleet_interfaces/CommandAck.status."""

    RECEIVED = 0
    ACCEPTED = 1
    SUCCEEDED = 2
    FAILED = 3
    REJECTED_DUPLICATE = 4
    REJECTED_EXPIRED = 5
    REJECTED_STALE_EPOCH = 6
    REJECTED_INVALID = 7
    REJECTED_SAFE_MODE = 8
    REJECTED_ESTOPPED = 9
    CANCELLED = 10
    REJECTED_PAUSED = 11

    @property
    def is_final(self) -> bool:
        return self not in (AckStatus.RECEIVED, AckStatus.ACCEPTED)

    @property
    def is_rejection(self) -> bool:
        return self.name.startswith('REJECTED_')


class Outcome(enum.IntEnum):
    """Values of fleet_interfaces/CommandOutcome.outcome: the one terminal result of a command."""

    SUCCEEDED = 0
    FAILED = 1
    EXPIRED = 2
    REJECTED = 3
    CANCELLED = 4


NO_ACK = 255
"""CommandOutcome.ack_status when no ack arrived."""


@dataclass(frozen=True, slots=True)
class Command:
    """One command for one agent. `issued_at` and `deadline` are UTC seconds since the Unix epoch."""

    command_id: str
    trace_id: str
    site_id: str
    shard_id: str
    agent_id: str
    seq: int
    epoch: int
    priority: Priority
    issued_at: float
    deadline: float
    kind: str
    args_json: str = '{}'
    attempt: int = 1

    def with_delivery(self, *, seq: int, epoch: int, attempt: int) -> Command:
        """The same command with new delivery fields (dataclasses.replace is too slow for the fan-out path)."""
        return Command(
            self.command_id,
            self.trace_id,
            self.site_id,
            self.shard_id,
            self.agent_id,
            seq,
            epoch,
            self.priority,
            self.issued_at,
            self.deadline,
            self.kind,
            self.args_json,
            attempt,
        )

    def next_attempt(self) -> Command:
        return self.with_delivery(seq=self.seq, epoch=self.epoch, attempt=self.attempt + 1)


@dataclass(frozen=True, slots=True)
class Ack:
    """An agent's acknowledgement of one command step."""

    command_id: str
    trace_id: str
    agent_id: str
    shard_id: str
    seq: int
    epoch: int
    attempt: int
    status: AckStatus
    detail: str = ''
    stamp: float = 0.0

    @property
    def final(self) -> bool:
        return self.status.is_final

    @classmethod
    def for_command(cls, command: Command, status: AckStatus, detail: str = '', stamp: float = 0.0) -> Ack:
        return cls(
            command_id=command.command_id,
            trace_id=command.trace_id,
            agent_id=command.agent_id,
            shard_id=command.shard_id,
            seq=command.seq,
            epoch=command.epoch,
            attempt=command.attempt,
            status=status,
            detail=detail,
            stamp=stamp,
        )


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The orchestrator's terminal decision for one command."""

    command_id: str
    trace_id: str
    agent_id: str
    shard_id: str
    seq: int
    outcome: Outcome
    ack_status: int = NO_ACK
    attempts: int = 0
    latency_ms: float = 0.0
    detail: str = ''
    stamp: float = 0.0
