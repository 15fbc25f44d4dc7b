"""The inspection mission of one shard: splits points among agents, runs one workflow per agent, hands a lost
agent's unfinished points to healthy agents and reports progress as TaskEvent records."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleet_core.model import Outcome
from fleet_core.workflow import (
    Event,
    FeedResult,
    Point,
    PointFinished,
    StateEntered,
    StepRequest,
    WorkflowInstance,
    WorkflowSpec,
    WorkflowStateError,
)


class MissionError(ValueError):
    """The mission cannot be created as asked (no agents, duplicate or malformed points, unknown home)."""


class MissionStateError(RuntimeError):
    """An operator request that does not fit the mission's state, e.g. resume while not paused."""


class TaskEventKind(enum.IntEnum):
    """Values of fleet_interfaces/TaskEvent.event."""

    MISSION_STARTED = 0
    STEP_STARTED = 1
    STEP_DONE = 2
    POINT_DONE = 3
    HANDOFF = 4
    AGENT_LOST = 5
    AGENT_REJOINED = 6
    AGENT_DONE = 7
    MISSION_COMPLETED = 8
    MISSION_FAILED = 9
    MISSION_CANCELLED = 10
    MISSION_PAUSED = 11
    MISSION_RESUMED = 12


class MissionState(enum.Enum):
    RUNNING = 'RUNNING'
    PAUSED = 'PAUSED'
    CANCELLING = 'CANCELLING'  # agents are on their way home
    COMPLETED = 'COMPLETED'
    FAILED = 'FAILED'
    CANCELLED = 'CANCELLED'

    @property
    def finished(self) -> bool:
        return self in (MissionState.COMPLETED, MissionState.FAILED, MissionState.CANCELLED)


@dataclass(frozen=True, slots=True)
class TaskEventRecord:
    """One fleet_interfaces/TaskEvent, field for field (stamp in UTC seconds)."""

    mission_id: str
    workflow: str
    site_id: str
    shard_id: str
    agent_id: str
    event: TaskEventKind
    state: str
    detail: str
    points_done: int
    points_total: int
    stamp: float


@dataclass(frozen=True, slots=True)
class MissionProgress:
    """Counters for RunMission feedback/result and `fleetctl mission status`."""

    state: MissionState
    points_done: int
    points_total: int
    points_undone: tuple[str, ...]  # skipped or cancelled (only final once the mission has finished)
    handoffs: int
    agents_active: int
    agents_lost: int
    success: bool
    detail: str


def angular_sweep(points: Sequence[Point]) -> list[Point]:
    """The points ordered by angle around their centroid (then distance, then id): contiguous runs of the sweep are
    spatially coherent sectors, so cutting it into chunks gives each taker a region of its own."""
    if not points:
        return []
    cx = math.fsum(p.x for p in points) / len(points)
    cy = math.fsum(p.y for p in points) / len(points)
    return sorted(points, key=lambda p: (math.atan2(p.y - cy, p.x - cx), math.hypot(p.x - cx, p.y - cy), p.point_id))


def split_points(points: Sequence[Point], agent_ids: Sequence[str]) -> dict[str, list[Point]]:
    """Deterministic, balanced, spatially coherent split: sweep the points by angle around their centroid and cut
    the sweep into contiguous chunks whose sizes differ by at most one, given to agents in id order."""
    agents = sorted(agent_ids)
    result: dict[str, list[Point]] = {agent: [] for agent in agents}
    if not points or not agents:
        return result
    swept = angular_sweep(points)
    size, extra = divmod(len(swept), len(agents))
    start = 0
    for index, agent in enumerate(agents):
        end = start + size + (index < extra)
        result[agent] = swept[start:end]
        start = end
    return result


class InspectionMission:
    """Drives one workflow instance per agent of a shard. Feed it outcomes and health changes, drain
    `next_requests()`, `take_cancellations()` and `take_events()` after every call. Time comes from `clock`."""

    def __init__(
        self,
        spec: WorkflowSpec,
        *,
        mission_id: str,
        site_id: str,
        shard_id: str,
        agent_ids: Sequence[str],
        points: Sequence[Point],
        clock: Callable[[], float],
        homes: Mapping[str, tuple[float, float]] | None = None,
        deadline: float | None = None,
    ) -> None:
        """Raises MissionError for no agents, duplicate agents or points, non-finite coordinates, unknown homes."""
        if not agent_ids:
            raise MissionError(f'mission {mission_id}: shard {shard_id} has no agents to run it')
        if len(set(agent_ids)) != len(agent_ids):
            raise MissionError(f'mission {mission_id}: agent ids are listed twice')
        seen: set[str] = set()
        for point in points:
            if point.point_id in seen:
                raise MissionError(f'mission {mission_id}: point id {point.point_id!r} is listed twice')
            if not (math.isfinite(point.x) and math.isfinite(point.y)):
                raise MissionError(f'mission {mission_id}: point {point.point_id!r} has non-finite coordinates')
            seen.add(point.point_id)
        homes = dict(homes or {})
        unknown = sorted(set(homes) - set(agent_ids))
        if unknown:
            raise MissionError(f'mission {mission_id}: homes given for agents not in the shard: {unknown}')
        self.spec = spec
        self.mission_id = mission_id
        self.site_id = site_id
        self.shard_id = shard_id
        self._clock = clock
        self._deadline = deadline
        self._points = {point.point_id: point for point in points}
        self._agents = sorted(agent_ids)
        assignment = split_points(points, self._agents)
        self._instances = {
            agent: WorkflowInstance(
                spec,
                mission_id=mission_id,
                agent_id=agent,
                home=homes.get(agent, (0.0, 0.0)),
                points=assignment[agent],
            )
            for agent in self._agents
        }
        self._state = MissionState.RUNNING
        self._started = False
        self._lost: set[str] = set()
        self._pool: list[Point] = []
        self._done_by: dict[str, str] = {}
        self._skipped: set[str] = set()
        self._cancelled_points: set[str] = set()
        self._handoffs = 0
        self._detail = ''
        self._outbox: list[StepRequest] = []
        self._cancellations: list[str] = []
        self._events: list[TaskEventRecord] = []

    # ----- queries -----------------------------------------------------------------------------------------

    @property
    def state(self) -> MissionState:
        return self._state

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(self._agents)

    @property
    def lost_agents(self) -> frozenset[str]:
        """Agents the mission currently treats as LOST (their points were handed off)."""
        return frozenset(self._lost)

    def instance(self, agent_id: str) -> WorkflowInstance:
        return self._instances[agent_id]

    def done_by(self) -> dict[str, str]:
        """Point id -> the one agent credited with inspecting it."""
        return dict(self._done_by)

    def progress(self) -> MissionProgress:
        undone = sorted(self._skipped | self._cancelled_points)
        if self._state.finished:
            undone = sorted(set(self._points) - set(self._done_by))
        active = sum(1 for a in self._agents if a not in self._lost and self._instances[a].result is None)
        return MissionProgress(
            state=self._state,
            points_done=len(self._done_by),
            points_total=len(self._points),
            points_undone=tuple(undone),
            handoffs=self._handoffs,
            agents_active=active,
            agents_lost=len(self._lost),
            success=self._success(),
            detail=self._detail,
        )

    def _success(self) -> bool:
        # RunMission.Result.success: every point inspected and every agent docked (a lost agent is not known docked).
        return (
            self._state is MissionState.COMPLETED
            and len(self._done_by) == len(self._points)
            and not self._lost
            and all(self._instances[a].result == 'succeeded' for a in self._agents)
        )

    # ----- outputs -----------------------------------------------------------------------------------------

    def next_requests(self) -> list[StepRequest]:
        """Step requests to dispatch, in order; use `request_id` as the command_id (retries keep it)."""
        out, self._outbox = self._outbox, []
        return out

    def take_cancellations(self) -> list[str]:
        """Request ids the mission no longer waits for (superseded, timed out, agent lost): drop them if queued."""
        out, self._cancellations = self._cancellations, []
        return out

    def take_events(self) -> list[TaskEventRecord]:
        out, self._events = self._events, []
        return out

    # ----- inputs ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every agent's workflow; raises MissionStateError when called twice."""
        if self._started:
            raise MissionStateError(f'mission {self.mission_id} already started')
        self._started = True
        self._emit('', TaskEventKind.MISSION_STARTED, f'{len(self._points)} points, {len(self._agents)} agents')
        now = self._clock()
        for agent in self._agents:
            self._apply(agent, self._instances[agent].start(now))
        self._check_finished()

    def on_outcome(self, agent_id: str, command_id: str, outcome: Outcome) -> bool:
        """Feed a command's terminal outcome; False when it is not the step this mission waits for."""
        instance = self._instances.get(agent_id)
        if instance is None or not self._started or instance.pending_request_id != command_id:
            return False
        kind = instance.state
        result = instance.feed(Event.from_outcome(outcome), self._clock(), request_id=command_id)
        if result.handled:
            self._emit(agent_id, TaskEventKind.STEP_DONE, f'{kind}: {outcome.name}', state=kind)
            self._apply(agent_id, result)
            self._check_finished()
        return result.handled

    def on_agent_lost(self, agent_id: str) -> bool:
        """The health monitor declared the agent LOST: its unfinished points go to healthy agents (or the pool)."""
        instance = self._instances.get(agent_id)
        if instance is None or agent_id in self._lost or not self._started:
            return False
        self._lost.add(agent_id)
        pending = instance.pending_request_id
        result = instance.feed(Event.AGENT_LOST, self._clock())
        if pending is not None and instance.pending_request_id != pending:
            self._cancellations.append(pending)
        taken = instance.take_points()
        self._emit(agent_id, TaskEventKind.AGENT_LOST, f'{len(taken)} unfinished points released')
        self._apply(agent_id, result)
        self._give(taken, source=agent_id)
        self._check_finished()
        return True

    def on_agent_recovered(self, agent_id: str) -> bool:
        """A lost agent is back: it takes pool points or a fair share of queued ones, else goes home and docks."""
        instance = self._instances.get(agent_id)
        if instance is None or agent_id not in self._lost:
            return False
        self._lost.discard(agent_id)
        if not self._state.finished and self._state is not MissionState.CANCELLING:
            pool, self._pool = self._pool, []
            self._give(pool, source='')
            self._rebalance_to(agent_id)
        self._emit(agent_id, TaskEventKind.AGENT_REJOINED, f'{instance.load} points to do')
        self._apply(agent_id, instance.feed(Event.AGENT_RECOVERED, self._clock()))
        self._check_finished()
        return True

    def pause(self) -> None:
        """Agents finish their current step and then wait; raises MissionStateError unless RUNNING."""
        if self._state is not MissionState.RUNNING:
            raise MissionStateError(f'mission {self.mission_id} is {self._state.value}: only a RUNNING mission pauses')
        self._state = MissionState.PAUSED
        self._broadcast(Event.PAUSE)
        self._emit('', TaskEventKind.MISSION_PAUSED, '')

    def resume(self) -> None:
        """Raises MissionStateError unless PAUSED."""
        if self._state is not MissionState.PAUSED:
            raise MissionStateError(f'mission {self.mission_id} is {self._state.value}: only a PAUSED mission resumes')
        self._state = MissionState.RUNNING
        self._emit('', TaskEventKind.MISSION_RESUMED, '')
        self._broadcast(Event.RESUME)
        self._check_finished()

    def cancel(self, reason: str = 'cancelled by operator') -> None:
        """Drop every unfinished point and send every agent home to dock; raises MissionStateError once finished."""
        if self._state.finished or self._state is MissionState.CANCELLING:
            raise MissionStateError(f'mission {self.mission_id} is already {self._state.value}')
        was_paused = self._state is MissionState.PAUSED
        self._state = MissionState.CANCELLING
        self._detail = reason
        self._abandon_points(self._cancelled_points)
        self._broadcast(Event.CANCEL)
        if was_paused:
            # Cancelling means "go home now": release the steps the pause was holding.
            self._broadcast(Event.RESUME)
        self._check_finished()

    def tick(self, now: float) -> None:
        """Time out steps whose deadline passed and fail the mission at its deadline."""
        for agent in self._agents:
            instance = self._instances[agent]
            deadline = instance.pending_deadline
            request_id = instance.pending_request_id
            if deadline is not None and request_id is not None and now >= deadline:
                self._cancellations.append(request_id)
                self._emit(agent, TaskEventKind.STEP_DONE, f'{instance.state}: TIMEOUT', state=instance.state)
                self._apply(agent, instance.feed(Event.TIMEOUT, now, request_id=request_id))
        if self._deadline is not None and now >= self._deadline and not self._state.finished:
            if self._state is not MissionState.CANCELLING:
                self._abandon_points(self._skipped)
                self._broadcast(Event.CANCEL)
                self._broadcast(Event.RESUME)
            self._finish(MissionState.FAILED, f'mission deadline passed with {self._undone_count()} points undone')
        self._check_finished()

    # ----- internals ---------------------------------------------------------------------------------------

    def _broadcast(self, event: Event) -> None:
        now = self._clock()
        for agent in self._agents:
            instance = self._instances[agent]
            pending = instance.pending_request_id
            result = instance.feed(event, now)
            if pending is not None and instance.pending_request_id != pending:
                self._cancellations.append(pending)
            self._apply(agent, result)

    def _abandon_points(self, into: set[str]) -> None:
        for point in self._pool:
            into.add(point.point_id)
        self._pool = []
        for agent in self._agents:
            for point in self._instances[agent].take_points():
                into.add(point.point_id)

    def _candidates(self) -> list[str]:
        return [
            agent
            for agent in self._agents
            if agent not in self._lost and self._instances[agent].result != 'failed' and self._instances[agent].started
        ]

    def _give(self, points: list[Point], *, source: str) -> None:
        if not points:
            return
        if self._state.finished or self._state is MissionState.CANCELLING:
            self._cancelled_points.update(p.point_id for p in points)
            return
        candidates = self._candidates()
        if not candidates:
            self._pool.extend(points)
            return
        # Water-fill by current load, then hand out contiguous slices so each receiver gets a coherent stretch.
        counts = dict.fromkeys(candidates, 0)
        for _ in points:
            target = min(candidates, key=lambda a: (self._instances[a].load + counts[a], a))
            counts[target] += 1
        start = 0
        now = self._clock()
        for agent in candidates:
            chunk = points[start : start + counts[agent]]
            start += counts[agent]
            if not chunk:
                continue
            self._instances[agent].add_points(chunk)
            if source:
                self._handoffs += len(chunk)
                ids = ','.join(p.point_id for p in chunk)
                self._emit(agent, TaskEventKind.HANDOFF, f'{len(chunk)} points from {source}: {ids}')
            self._apply(agent, self._instances[agent].feed(Event.POINTS_ADDED, now))

    def _rebalance_to(self, agent_id: str) -> None:
        candidates = self._candidates()
        if agent_id not in candidates:
            return  # a failed agent takes no points back
        receiver = self._instances[agent_id]
        moved: list[Point] = []
        donors = [a for a in candidates if a != agent_id]
        while donors:
            donor = max(donors, key=lambda a: (len(self._instances[a].queued_points), a))
            if len(self._instances[donor].queued_points) - (receiver.load + len(moved)) <= 1:
                break
            moved = self._instances[donor].take_queued_tail(1) + moved
        if moved:
            receiver.add_points(moved)
            self._emit(agent_id, TaskEventKind.HANDOFF, f'{len(moved)} queued points rebalanced to {agent_id}')
            # As for any handoff: an instance that had already finished (nothing to do when it was lost) restarts.
            self._apply(agent_id, receiver.feed(Event.POINTS_ADDED, self._clock()))

    def _apply(self, agent_id: str, result: FeedResult) -> None:
        for effect in result.effects:
            if isinstance(effect, StepRequest):
                self._outbox.append(effect)
                detail = f'{effect.kind} {effect.point_id}'.strip()
                self._emit(agent_id, TaskEventKind.STEP_STARTED, detail, state=effect.state)
            elif isinstance(effect, PointFinished):
                self._point_finished(effect)
            elif isinstance(effect, StateEntered):
                self._state_entered(effect)

    def _point_finished(self, effect: PointFinished) -> None:
        if effect.done:
            if effect.point_id in self._done_by:
                # Cannot happen while points move only between queues; keep the first credit if it ever does.
                return
            self._done_by[effect.point_id] = effect.agent_id
            self._skipped.discard(effect.point_id)
            self._emit(effect.agent_id, TaskEventKind.POINT_DONE, effect.point_id)
        elif effect.point_id not in self._done_by:
            self._skipped.add(effect.point_id)
            self._emit(effect.agent_id, TaskEventKind.STEP_DONE, f'point {effect.point_id} skipped')

    def _state_entered(self, effect: StateEntered) -> None:
        instance = self._instances[effect.agent_id]
        result = self.spec.state(effect.state).result
        if result is None:
            return
        self._emit(effect.agent_id, TaskEventKind.AGENT_DONE, result)
        if result == 'failed':
            self._give(instance.take_points(), source=effect.agent_id)

    def _undone_count(self) -> int:
        return len(self._points) - len(self._done_by)

    def _check_finished(self) -> None:
        if self._state.finished or not self._started:
            return
        active = [a for a in self._agents if a not in self._lost and self._instances[a].result is None]
        if active:
            return
        if self._state is MissionState.CANCELLING:
            self._finish(MissionState.CANCELLED, self._detail or 'cancelled')
            return
        if self._pool:
            if not self._lost:
                self._finish(MissionState.FAILED, f'no agent left to inspect {len(self._pool)} points')
            # Otherwise wait: a lost agent may recover and take the pool (the deadline bounds the wait).
            return
        parts = []
        if self._skipped:
            parts.append(f'{len(self._skipped)} points skipped: {",".join(sorted(self._skipped))}')
        if self._lost:
            parts.append(f'agents lost: {",".join(sorted(self._lost))}')
        failed = [a for a in self._agents if self._instances[a].result == 'failed']
        if failed:
            parts.append(f'agents failed: {",".join(failed)}')
        self._finish(MissionState.COMPLETED, '; '.join(parts))

    def _finish(self, state: MissionState, detail: str) -> None:
        self._state = state
        self._detail = detail
        kind = {
            MissionState.COMPLETED: TaskEventKind.MISSION_COMPLETED,
            MissionState.FAILED: TaskEventKind.MISSION_FAILED,
            MissionState.CANCELLED: TaskEventKind.MISSION_CANCELLED,
        }[state]
        self._emit('', kind, detail)

    def _emit(self, agent_id: str, kind: TaskEventKind, detail: str, *, state: str | None = None) -> None:
        if state is None:
            state = self._instances[agent_id].state if agent_id else self._state.value
        self._events.append(
            TaskEventRecord(
                mission_id=self.mission_id,
                workflow=self.spec.name,
                site_id=self.site_id,
                shard_id=self.shard_id,
                agent_id=agent_id,
                event=kind,
                state=state,
                detail=detail,
                points_done=len(self._done_by),
                points_total=len(self._points),
                stamp=self._clock(),
            )
        )


def mission_to_dict(mission: InspectionMission) -> dict[str, Any]:
    """A JSON-safe snapshot of a started mission (outputs not yet drained are not included: drain first)."""
    m = mission
    return {
        'mission_id': m.mission_id,
        'workflow': m.spec.name,
        'site_id': m.site_id,
        'shard_id': m.shard_id,
        'deadline': m._deadline,
        'points': [[p.point_id, p.x, p.y] for p in m._points.values()],
        'agents': list(m._agents),
        'instances': {agent: m._instances[agent].to_dict() for agent in m._agents},
        'state': m._state.value,
        'started': m._started,
        'lost': sorted(m._lost),
        'pool': [[p.point_id, p.x, p.y] for p in m._pool],
        'done_by': dict(m._done_by),
        'skipped': sorted(m._skipped),
        'cancelled_points': sorted(m._cancelled_points),
        'handoffs': m._handoffs,
        'detail': m._detail,
    }


def mission_from_dict(spec: WorkflowSpec, data: Mapping[str, Any], *, clock: Callable[[], float]) -> InspectionMission:
    """Restore `mission_to_dict` output; raises MissionError when the snapshot is malformed or for another spec."""
    try:
        if data['workflow'] != spec.name:
            raise MissionError(f'snapshot of workflow {data["workflow"]!r} given spec {spec.name!r}')
        points = [Point(str(p[0]), float(p[1]), float(p[2])) for p in data['points']]
        mission = InspectionMission(
            spec,
            mission_id=str(data['mission_id']),
            site_id=str(data['site_id']),
            shard_id=str(data['shard_id']),
            agent_ids=[str(a) for a in data['agents']],
            points=points,
            clock=clock,
            deadline=None if data['deadline'] is None else float(data['deadline']),
        )
        mission._instances = {
            str(agent): WorkflowInstance.from_dict(spec, dict(snapshot))
            for agent, snapshot in data['instances'].items()
        }
        if sorted(mission._instances) != mission._agents:
            raise MissionError('snapshot instances do not match its agents')
        mission._state = MissionState(data['state'])
        mission._started = bool(data['started'])
        mission._lost = {str(a) for a in data['lost']}
        mission._pool = [Point(str(p[0]), float(p[1]), float(p[2])) for p in data['pool']]
        mission._done_by = {str(k): str(v) for k, v in data['done_by'].items()}
        mission._skipped = {str(p) for p in data['skipped']}
        mission._cancelled_points = {str(p) for p in data['cancelled_points']}
        mission._handoffs = int(data['handoffs'])
        mission._detail = str(data['detail'])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, WorkflowStateError) as exc:
        if isinstance(exc, MissionError):
            raise
        raise MissionError(f'malformed mission snapshot: {exc!r}') from None
    return mission


def points_from_goal(point_ids: Sequence[str], point_xy: Sequence[float]) -> list[Point]:
    """Convert RunMission goal arrays; raises MissionError when x,y pairs do not match the ids."""
    if len(point_xy) != 2 * len(point_ids):
        raise MissionError(
            f'point_xy has {len(point_xy)} numbers; {len(point_ids)} point ids need {2 * len(point_ids)}'
        )
    return [Point(pid, point_xy[2 * i], point_xy[2 * i + 1]) for i, pid in enumerate(point_ids)]
