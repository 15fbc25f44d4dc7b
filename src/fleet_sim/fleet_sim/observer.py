"""FleetObserver: what the demo and the chaos runs see of the fleet from outside — the shard journals (every command
ever submitted), outcomes, acks, leases, statuses and heartbeats — kept as plain counters for the summary."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from rclpy.node import Node

from fleet_core import topics
from fleet_core.config import FleetConfig
from fleet_core.model import Outcome
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandAck, CommandOutcome, CommandOutcomes, Heartbeat, LeaderLease, ShardStatus
from fleet_ros import qos
from fleet_ros.convert import from_time

ShardKey = tuple[str, str]


@dataclass(slots=True)
class JournalEntry:
    trace_id: str
    agent_id: str
    shard: ShardKey
    issued_at: float
    kind: str


@dataclass(slots=True)
class OutcomeRecord:
    outcome: int
    attempts: int
    latency_ms: float
    detail: str
    received_at: float


@dataclass(slots=True)
class LeaseSeen:
    received_at: float
    leader_id: str
    epoch: int


@dataclass(slots=True)
class ShardView:
    leases: list[LeaseSeen] = field(default_factory=list)
    statuses: dict[str, ShardStatus] = field(default_factory=dict)

    @property
    def leader(self) -> LeaseSeen | None:
        return self.leases[-1] if self.leases else None


class FleetObserver:
    """Subscribes on `node` to every shard of `fleet`; callbacks only record (no ROS calls)."""

    def __init__(self, node: Node, fleet: FleetConfig, *, wall: Callable[[], float] = time.time) -> None:
        self.fleet = fleet
        self.wall = wall
        self.journal: dict[str, JournalEntry] = {}
        self.outcomes: dict[str, list[OutcomeRecord]] = defaultdict(list)
        self.first_ack_ms: dict[str, float] = {}
        self.final_acks: dict[str, int] = defaultdict(int)
        self.agent_duplicate_rejections = 0
        self.heartbeat_at: dict[str, float] = {}
        self.battery: dict[str, float] = {}
        self.shards: dict[ShardKey, ShardView] = {(s.site_id, s.shard_id): ShardView() for s in fleet.shards}
        self.on_journal: list[Callable[[CommandMsg], None]] = []
        self.on_outcome: list[Callable[[CommandOutcome], None]] = []
        for shard in fleet.shards:
            key = (shard.site_id, shard.shard_id)
            site, sid = key
            node.create_subscription(
                CommandMsg, topics.shard_journal(site, sid), partial(self._journal, key), qos.EVENTS
            )
            node.create_subscription(CommandOutcomes, topics.shard_outcome(site, sid), self._outcomes, qos.EVENTS)
            node.create_subscription(CommandAck, topics.shard_ack(site, sid), self._ack, qos.ACK)
            node.create_subscription(
                LeaderLease, topics.shard_leader(site, sid), partial(self._lease, key), qos.LATCHED
            )
            node.create_subscription(
                ShardStatus, topics.shard_status(site, sid), partial(self._status, key), qos.LATCHED
            )
            node.create_subscription(Heartbeat, topics.shard_heartbeat(site, sid), self._heartbeat, qos.HEARTBEAT)

    # -- callbacks ---------------------------------------------------------------------------------------

    def _journal(self, key: ShardKey, msg: CommandMsg) -> None:
        if msg.command_id not in self.journal:
            self.journal[msg.command_id] = JournalEntry(
                msg.trace_id, msg.agent_id, key, from_time(msg.issued_at), msg.kind
            )
        for hook in self.on_journal:
            hook(msg)

    def _outcomes(self, batch: CommandOutcomes) -> None:
        received = self.wall()
        for msg in batch.outcomes:
            self.outcomes[msg.command_id].append(
                OutcomeRecord(msg.outcome, msg.attempts, msg.latency_ms, msg.detail, received)
            )
            for hook in self.on_outcome:
                hook(msg)

    def _ack(self, msg: CommandAck) -> None:
        if msg.status == CommandAck.STATUS_REJECTED_DUPLICATE:
            self.agent_duplicate_rejections += 1
        elif msg.final:
            self.final_acks[msg.command_id] += 1
        if msg.command_id in self.first_ack_ms:
            return
        entry = self.journal.get(msg.command_id)
        if entry is not None:
            accepted = msg.status == CommandAck.STATUS_ACCEPTED
            elapsed = self.wall() - entry.issued_at
            self.first_ack_ms[msg.command_id] = self.fleet.intake.answer_delay(elapsed, accepted=accepted) * 1000.0

    def _lease(self, key: ShardKey, msg: LeaderLease) -> None:
        view = self.shards[key]
        leader = view.leader
        if leader is None or (msg.leader_id, msg.epoch) != (leader.leader_id, leader.epoch):
            view.leases.append(LeaseSeen(self.wall(), msg.leader_id, msg.epoch))

    def _status(self, key: ShardKey, msg: ShardStatus) -> None:
        self.shards[key].statuses[msg.leader_id] = msg

    def _heartbeat(self, msg: Heartbeat) -> None:
        self.heartbeat_at[msg.agent_id] = self.wall()
        self.battery[msg.agent_id] = msg.battery_pct

    # -- views -------------------------------------------------------------------------------------------

    def online(self, within_sec: float = 2.0) -> int:
        now = self.wall()
        return sum(1 for t in self.heartbeat_at.values() if now - t <= within_sec)

    def leaders_ready(self) -> bool:
        return all(view.leader is not None for view in self.shards.values())

    def unresolved(self) -> list[str]:
        return [c for c in self.journal if c not in self.outcomes]

    def takeover_after(self, key: ShardKey, killed_at: float, old_epoch: int) -> float | None:
        """Seconds from `killed_at` until a lease with a newer epoch was seen for the shard."""
        for lease in self.shards[key].leases:
            if lease.epoch > old_epoch and lease.received_at >= killed_at:
                return lease.received_at - killed_at
        return None

    def lease_log(self) -> dict[str, list[tuple[float, str, int]]]:
        """Per shard ('site/shard'), every lease that named a new leader or epoch: (received_at, leader_id, epoch)."""
        return {
            f'{site}/{shard}': [(lease.received_at, lease.leader_id, lease.epoch) for lease in view.leases]
            for (site, shard), view in self.shards.items()
        }

    def agent_duplicates_suppressed(self) -> int:
        """Redeliveries the agents answered without executing: a repeated final ack (the stored outcome re-sent for
        a command id already applied) or a REJECTED_DUPLICATE (seq at or below the last applied)."""
        repeats = sum(n - 1 for n in self.final_acks.values() if n > 1)
        return repeats + self.agent_duplicate_rejections

    def dispatcher_duplicates(self) -> int:
        # Each leader counts from its own activation: sum the last status of every leader of every shard.
        return sum(s.duplicates_suppressed for view in self.shards.values() for s in view.statuses.values())

    def unsuccessful_details(self) -> Counter[tuple[str, str]]:
        """(outcome, detail with numbers masked) of every first outcome that was not SUCCEEDED."""
        found: Counter[tuple[str, str]] = Counter()
        for records in self.outcomes.values():
            first = records[0]
            if first.outcome != Outcome.SUCCEEDED:
                found[(Outcome(first.outcome).name, re.sub(r'[0-9.]+', 'N', first.detail)[:100])] += 1
        return found
