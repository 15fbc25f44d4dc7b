"""Fleet-wide operations (pause/resume a site) pre-announced and delivered in staggered waves, and the latched,
immediate, never-waved e-stop state of a shard."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class WaveError(ValueError):
    """A fleet operation that cannot be planned (no agents, bad wave settings)."""


class EStopError(ValueError):
    """Base class of e-stop request errors."""


class EmptyEStopScope(EStopError):
    """An e-stop that would reach no agent."""


class EStopNotEngaged(EStopError):
    """A release (resume) while no e-stop is engaged."""


class FleetOp(enum.IntEnum):
    """Values of fleet_interfaces/FleetOperation.op."""

    PAUSE = 0
    RESUME = 1


@dataclass(frozen=True, slots=True)
class WaveConfig:
    """How a fleet operation is staggered: `wave_size` agents every `wave_interval_sec`, the first wave
    `lead_time_sec` after the announcement."""

    wave_size: int = 25
    wave_interval_sec: float = 0.2
    lead_time_sec: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.wave_size, bool) or self.wave_size < 1:
            raise WaveError(f'operations.wave_size must be an integer >= 1, got {self.wave_size!r}')
        for key in ('wave_interval_sec', 'lead_time_sec'):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise WaveError(f'operations.{key} must be a number of seconds >= 0, got {value!r}')


@dataclass(frozen=True, slots=True)
class Wave:
    index: int
    at: float
    agent_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WavePlan:
    """The announcement (fields of fleet_interfaces/FleetOperation) plus the per-agent schedule behind it."""

    operation_id: str
    site_id: str
    op: FleetOp
    waves: int
    wave_size: int
    wave_interval_sec: float
    starts_at: float
    issued_by: str
    schedule: tuple[Wave, ...]

    def due(self, now: float, *, sent: int) -> tuple[Wave, ...]:
        """Waves not yet sent (`sent` = how many were) whose time has come."""
        return tuple(wave for wave in self.schedule[sent:] if wave.at <= now)

    def time_for(self, agent_id: str) -> float:
        """When `agent_id` gets the operation; raises KeyError when it is not in the plan."""
        for wave in self.schedule:
            if agent_id in wave.agent_ids:
                return wave.at
        raise KeyError(f'agent {agent_id!r} is not part of operation {self.operation_id}')


def plan_operation(
    *,
    operation_id: str,
    site_id: str,
    op: FleetOp,
    agent_ids: Sequence[str],
    config: WaveConfig,
    now: float,
    issued_by: str,
) -> WavePlan:
    """Cut the agents (sorted by id, duplicates dropped) into waves; raises WaveError when there is no agent."""
    agents = sorted(set(agent_ids))
    if not agents:
        raise WaveError(f'operation {op.name} for site {site_id} addresses no agent')
    starts_at = now + config.lead_time_sec
    schedule = tuple(
        Wave(
            index=index,
            at=starts_at + index * config.wave_interval_sec,
            agent_ids=tuple(agents[start : start + config.wave_size]),
        )
        for index, start in enumerate(range(0, len(agents), config.wave_size))
    )
    return WavePlan(
        operation_id=operation_id,
        site_id=site_id,
        op=op,
        waves=len(schedule),
        wave_size=config.wave_size,
        wave_interval_sec=config.wave_interval_sec,
        starts_at=starts_at,
        issued_by=issued_by,
        schedule=schedule,
    )


@dataclass(frozen=True, slots=True)
class EStopSnapshot:
    """fleet_interfaces/EStop, field for field."""

    site_id: str
    shard_id: str
    engaged: bool
    revision: int
    reason: str
    issued_by: str
    stamp: float


class EStopState:
    """The latched e-stop of one shard. The orchestrator publishes every snapshot at once to all agents (never in
    waves); agents apply a snapshot only when its revision is newer than the last they applied."""

    def __init__(self, *, site_id: str, shard_id: str, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._snapshot = EStopSnapshot(site_id, shard_id, False, 0, '', '', clock())

    @property
    def snapshot(self) -> EStopSnapshot:
        return self._snapshot

    @property
    def engaged(self) -> bool:
        return self._snapshot.engaged

    def engage(self, *, scope: Sequence[str], reason: str, issued_by: str) -> EStopSnapshot:
        """Latch the e-stop for the agents in `scope`; engaging again bumps the revision (a new reason).
        Raises EmptyEStopScope when scope is empty."""
        if not scope:
            raise EmptyEStopScope(
                f'e-stop for {self._snapshot.site_id}/{self._snapshot.shard_id} addresses no agent; '
                'name a site, shard or agents that exist'
            )
        return self._change(True, reason, issued_by)

    def release(self, *, reason: str, issued_by: str) -> EStopSnapshot:
        """Explicit resume; raises EStopNotEngaged when nothing is engaged (nothing is changed)."""
        if not self._snapshot.engaged:
            raise EStopNotEngaged(
                f'no e-stop is engaged on {self._snapshot.site_id}/{self._snapshot.shard_id} '
                f'(revision {self._snapshot.revision}); nothing to resume'
            )
        return self._change(False, reason, issued_by)

    def observe(self, snapshot: EStopSnapshot) -> bool:
        """Agent side / standby side: adopt a newer revision of the same shard; False for stale or foreign ones."""
        current = self._snapshot
        if (snapshot.site_id, snapshot.shard_id) != (current.site_id, current.shard_id):
            return False
        if snapshot.revision <= current.revision:
            return False
        self._snapshot = snapshot
        return True

    def _change(self, engaged: bool, reason: str, issued_by: str) -> EStopSnapshot:
        current = self._snapshot
        self._snapshot = EStopSnapshot(
            site_id=current.site_id,
            shard_id=current.shard_id,
            engaged=engaged,
            revision=current.revision + 1,
            reason=reason,
            issued_by=issued_by,
            stamp=self._clock(),
        )
        return self._snapshot
