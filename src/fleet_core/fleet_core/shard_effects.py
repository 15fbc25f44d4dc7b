"""What a ShardLeader decided after one input, for the ROS node to carry out (no ROS here): a batch of effects in
the order the node applies them, the operators' requests and the answers to operators' requests."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from fleet_core.dispatcher import Hop
from fleet_core.mission import TaskEventRecord
from fleet_core.model import Command, CommandResult
from fleet_core.shard_journal import SubmissionRecord
from fleet_core.waves import EStopSnapshot, WavePlan


class LogLevel(enum.Enum):
    INFO = 'info'
    WARNING = 'warning'
    ERROR = 'error'


@dataclass(slots=True)
class Effects:
    """Everything below is already in the shard journal where it keeps it. The node applies it in this order: the
    e-stop (latched and immediate: before anything else) and operation announcements, the mission journal, the
    accepted commands and request records (standbys never lag behind what agents were sent), outcomes, task events,
    trace hops, and deliveries last (a lease lost while sending still leaves the outcomes announced).
    `stepped_down` says the leader stopped leading during this input (`journal_failed`: because its journal failed,
    after which the replica must not lead until reconfigured); `handoff` is then the unfinished work for the next
    leader."""

    estop: EStopSnapshot | None = None
    operation: WavePlan | None = None
    mission_journal: list[str] = field(default_factory=list)
    replicate: list[Command] = field(default_factory=list)
    records: list[SubmissionRecord] = field(default_factory=list)
    outcomes: list[CommandResult] = field(default_factory=list)
    task_events: list[TaskEventRecord] = field(default_factory=list)
    mission_changed: bool = False
    mission_finished: bool = False
    hops: list[Hop] = field(default_factory=list)
    sends: list[Command] = field(default_factory=list)
    logs: list[tuple[LogLevel, str]] = field(default_factory=list)
    stepped_down: str = ''
    journal_failed: bool = False
    fenced_by: int = 0
    handoff: list[Command] = field(default_factory=list)

    def log(self, level: LogLevel, text: str) -> None:
        self.logs.append((level, text))


@dataclass(frozen=True, slots=True)
class SubmitReply:
    """fleet_interfaces/SubmitCommand's response, field for field (`states` as CommandState values)."""

    accepted: bool
    error: str = ''
    duplicate: bool = False
    trace_id: str = ''
    command_ids: tuple[str, ...] = ()
    agent_ids: tuple[str, ...] = ()
    states: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class OperationReply:
    """The answer to an e-stop (revision) or fleet operation (operation_id) request."""

    ok: bool
    error: str = ''
    revision: int = 0
    operation_id: str = ''


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """fleet_interfaces/SubmitCommand's request, field for field (`priority` unchecked: the leader validates it)."""

    agent_ids: tuple[str, ...]
    kind: str
    args_json: str
    priority: int
    ttl_sec: float
    trace_id: str = ''
    request_id: str = ''
