"""Agent liveness from heartbeats and business-level acks (never telemetry): ONLINE, SUSPECT or LOST per agent."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace


class HealthConfigError(ValueError):
    """A health setting that cannot work; the message names the key."""


class UnknownAgent(KeyError):
    """A heartbeat or ack from an agent this monitor was not configured with."""


class Liveness(enum.Enum):
    UNKNOWN = 'UNKNOWN'  # configured, no heartbeat yet
    ONLINE = 'ONLINE'
    SUSPECT = 'SUSPECT'  # some heartbeats missed; still counted online, not yet handed off
    LOST = 'LOST'


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """`health:` block of the fleet config. LOST after `missed_heartbeats_lost` silent periods."""

    heartbeat_period_sec: float = 1.0
    missed_heartbeats_suspect: int = 2
    missed_heartbeats_lost: int = 3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.heartbeat_period_sec) and self.heartbeat_period_sec > 0):
            raise HealthConfigError('health.heartbeat_period_sec must be a positive number of seconds')
        if self.missed_heartbeats_suspect < 1:
            raise HealthConfigError('health.missed_heartbeats_suspect must be >= 1')
        if self.missed_heartbeats_lost <= self.missed_heartbeats_suspect:
            raise HealthConfigError('health.missed_heartbeats_lost must be greater than missed_heartbeats_suspect')

    @property
    def suspect_after_sec(self) -> float:
        return self.heartbeat_period_sec * self.missed_heartbeats_suspect

    @property
    def lost_after_sec(self) -> float:
        return self.heartbeat_period_sec * self.missed_heartbeats_lost


@dataclass(frozen=True, slots=True)
class LivenessChange:
    """One agent moved from `previous` to `current` at orchestrator time `at`."""

    agent_id: str
    previous: Liveness
    current: Liveness
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """What the orchestrator knows about one agent."""

    agent_id: str
    liveness: Liveness
    last_seen: float  # orchestrator clock at the last heartbeat or ack (monitor start before any)
    last_heartbeat_stamp: float  # the agent's own clock, for display only
    last_applied_seq: int
    highest_epoch_seen: int
    state: int  # Heartbeat.STATE_*
    degradation_level: int


class HealthMonitor:
    """Tracks every configured agent of a shard. Silence is measured with the injected clock on receipt, so agent
    clock skew cannot make an agent look alive or dead."""

    def __init__(self, config: HealthConfig, agent_ids: Iterable[str], *, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        start = clock()
        self._agents = {
            agent: AgentHealth(agent, Liveness.UNKNOWN, start, 0.0, 0, 0, 0, 0) for agent in sorted(set(agent_ids))
        }
        self._acked: dict[str, float] = {}  # last ack of an ONLINE agent (kept apart: acks are frequent)

    def _get(self, agent_id: str) -> AgentHealth:
        try:
            return self._agents[agent_id]
        except KeyError:
            raise UnknownAgent(f'agent {agent_id!r} is not configured in this shard') from None

    def on_heartbeat(
        self,
        agent_id: str,
        *,
        stamp: float,
        last_applied_seq: int,
        highest_epoch_seen: int,
        state: int = 0,
        degradation_level: int = 0,
    ) -> list[LivenessChange]:
        """A heartbeat arrived: the agent is ONLINE (recovering it when LOST). Raises UnknownAgent."""
        record = self._get(agent_id)
        now = self._clock()
        self._agents[agent_id] = AgentHealth(
            agent_id=agent_id,
            liveness=Liveness.ONLINE,
            last_seen=now,
            last_heartbeat_stamp=stamp,
            # The agent's own report wins: after a store reset it may legitimately go down.
            last_applied_seq=last_applied_seq,
            highest_epoch_seen=max(record.highest_epoch_seen, highest_epoch_seen),
            state=state,
            degradation_level=degradation_level,
        )
        if record.liveness is Liveness.ONLINE:
            return []
        return [LivenessChange(agent_id, record.liveness, Liveness.ONLINE, now, 'heartbeat')]

    def on_ack(self, agent_id: str) -> list[LivenessChange]:
        """A command ack proves the agent works; it refreshes liveness but does not revive a LOST agent (only a
        heartbeat does, so one delayed ack cannot flap the handoff logic)."""
        record = self._get(agent_id)
        if record.liveness is Liveness.LOST:
            return []
        now = self._clock()
        if record.liveness is Liveness.ONLINE:
            self._acked[agent_id] = now  # hot path (every ack): no record rebuilt
            return []
        changes = [LivenessChange(agent_id, record.liveness, Liveness.ONLINE, now, 'ack')]
        self._agents[agent_id] = replace(record, liveness=Liveness.ONLINE, last_seen=now)
        return changes

    def evaluate(self, now: float | None = None) -> list[LivenessChange]:
        """Apply silence thresholds at `now` (default: the clock); changes come sorted by agent id."""
        now = self._clock() if now is None else now
        changes: list[LivenessChange] = []
        for agent_id, record in self._agents.items():
            silent = now - max(record.last_seen, self._acked.get(agent_id, record.last_seen))
            if silent >= self.config.lost_after_sec:
                target = Liveness.LOST
            elif silent >= self.config.suspect_after_sec and record.liveness is not Liveness.UNKNOWN:
                target = Liveness.SUSPECT
            else:
                continue
            if record.liveness is target or record.liveness is Liveness.LOST:
                continue
            periods = silent / self.config.heartbeat_period_sec
            changes.append(LivenessChange(agent_id, record.liveness, target, now, f'silent {periods:.1f} periods'))
            self._agents[agent_id] = replace(record, liveness=target)
        return changes

    def health(self, agent_id: str) -> AgentHealth:
        record = self._get(agent_id)
        acked = self._acked.get(agent_id, record.last_seen)
        return replace(record, last_seen=acked) if acked > record.last_seen else record

    def liveness(self, agent_id: str) -> Liveness:
        return self._get(agent_id).liveness

    def online(self) -> list[str]:
        """Agents counted online in ShardStatus (ONLINE or SUSPECT)."""
        return [a for a, r in self._agents.items() if r.liveness in (Liveness.ONLINE, Liveness.SUSPECT)]

    def lost(self) -> list[str]:
        return [a for a, r in self._agents.items() if r.liveness is Liveness.LOST]

    def highest_epoch_seen(self) -> int:
        """Highest orchestrator epoch any agent reported: a new leader must start above it."""
        return max((r.highest_epoch_seen for r in self._agents.values()), default=0)
