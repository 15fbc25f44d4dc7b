"""One running workflow for one agent in one mission: a deterministic reaction to events, serialisable as a dict."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet_core.model import Priority
from fleet_core.workflow.spec import STEP_EVENTS, TEMPLATE, Branch, Event, StateSpec, WorkflowSpec

_REQUEST_NAMESPACE = uuid.UUID('7d1f0c8e-3b51-4d55-9a57-2f9b2a6c0e41')
_MAX_CHOICES = 64
"""Bound on choice states visited in one transition (the loader rejects cycles; this catches engine bugs)."""


class WorkflowStateError(RuntimeError):
    """The instance cannot proceed, e.g. a step needs the current point but there is none, or a snapshot is bad."""


@dataclass(frozen=True, slots=True)
class Point:
    """An inspection point in the site frame (metres)."""

    point_id: str
    x: float
    y: float

    def __post_init__(self) -> None:
        # Coordinates are always floats so a snapshot round trip renders identical step arguments.
        object.__setattr__(self, 'x', float(self.x))
        object.__setattr__(self, 'y', float(self.y))


@dataclass(frozen=True, slots=True)
class StepRequest:
    """A command the workflow wants sent to its agent. `request_id` is deterministic: use it as the command_id."""

    request_id: str
    agent_id: str
    kind: str
    args: dict[str, Any]
    priority: Priority
    ttl_sec: float
    issued_at: float
    state: str
    point_id: str = ''

    def args_json(self) -> str:
        return json.dumps(self.args, sort_keys=True, separators=(',', ':'))


@dataclass(frozen=True, slots=True)
class PointFinished:
    """The instance finished with a point: `done` when inspected and reported, False when it gave the point up."""

    agent_id: str
    point_id: str
    done: bool


@dataclass(frozen=True, slots=True)
class StateEntered:
    """The instance moved from `previous` to `state` on `event` (None at start; choice states are not listed)."""

    agent_id: str
    previous: str
    state: str
    event: Event | None


Effect = StepRequest | PointFinished | StateEntered


@dataclass(frozen=True, slots=True)
class FeedResult:
    """What one event did: `handled` is False when the state ignores it (or it answers a stale request)."""

    handled: bool
    effects: tuple[Effect, ...] = field(default=())


@dataclass(slots=True)
class _Pending:
    request_id: str
    kind: str
    deadline: float
    point_id: str


class WorkflowInstance:
    """Runs `spec` for `agent_id`. All time comes in through `now` arguments, so replays are exact."""

    def __init__(
        self,
        spec: WorkflowSpec,
        *,
        mission_id: str,
        agent_id: str,
        home: tuple[float, float] = (0.0, 0.0),
        points: Iterable[Point] = (),
    ) -> None:
        self.spec = spec
        self.mission_id = mission_id
        self.agent_id = agent_id
        self.home = (float(home[0]), float(home[1]))
        self._state = ''
        self._queue: list[Point] = list(points)
        self._current: Point | None = None
        self._retries = 0
        self._undocked = False
        self._cancelled = False
        self._held = False
        self._step_held = False
        self._step_no = 0
        self._pending: _Pending | None = None

    # ----- queries -----------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def started(self) -> bool:
        return bool(self._state)

    @property
    def result(self) -> str | None:
        """'succeeded', 'failed' or 'cancelled' while the agent's part is over, else None."""
        return self.spec.state(self._state).result if self._state else None

    @property
    def paused(self) -> bool:
        return self._held

    @property
    def pending_request_id(self) -> str | None:
        return self._pending.request_id if self._pending else None

    @property
    def pending_deadline(self) -> float | None:
        return self._pending.deadline if self._pending else None

    @property
    def current_point(self) -> Point | None:
        return self._current

    @property
    def queued_points(self) -> tuple[Point, ...]:
        return tuple(self._queue)

    @property
    def load(self) -> int:
        """Points still to do by this instance (queued plus the current one)."""
        return len(self._queue) + (self._current is not None)

    # ----- the mission's hands on the point queue ---------------------------------------------------------

    def add_points(self, points: Sequence[Point]) -> None:
        self._queue.extend(points)

    def take_points(self) -> list[Point]:
        """Remove and return every unfinished point (the current one first); the instance keeps none."""
        taken = ([self._current] if self._current is not None else []) + self._queue
        self._current = None
        self._queue = []
        return taken

    def take_queued_tail(self, count: int) -> list[Point]:
        """Remove up to `count` points from the end of the queue (never the current point)."""
        count = max(0, min(count, len(self._queue)))
        if count == 0:
            return []
        taken = self._queue[-count:]
        del self._queue[-count:]
        return taken

    # ----- events ------------------------------------------------------------------------------------------

    def start(self, now: float) -> FeedResult:
        """Enter the initial state; call once."""
        if self._state:
            raise WorkflowStateError(f'workflow {self.spec.name} for {self.agent_id} already started')
        effects: list[Effect] = []
        self._enter(self.spec.initial, now, effects)
        effects.insert(0, StateEntered(self.agent_id, '', self._state, None))
        return FeedResult(True, tuple(effects))

    def feed(self, event: Event, now: float, *, request_id: str | None = None) -> FeedResult:
        """React to `event`. Step events (outcomes, TIMEOUT) must carry the request_id of the pending step."""
        if not self._state:
            raise WorkflowStateError(f'workflow {self.spec.name} for {self.agent_id} fed {event.value} before start')
        state = self.spec.state(self._state)
        if event in STEP_EVENTS and (self._pending is None or request_id != self._pending.request_id):
            return FeedResult(False)
        branches = state.branches(event)
        branch = self._pick(branches or ())
        if branch is None:
            return FeedResult(False)
        effects: list[Effect] = []
        if event in STEP_EVENTS:
            self._pending = None
        previous = self._state
        self._run(branch.actions, effects)
        if branch.target is not None:
            self._enter(branch.target, now, effects)
            effects.insert(0, StateEntered(self.agent_id, previous, self._state, event))
        elif self._step_held and not self._held and state.step is not None:
            self._step_held = False
            self._issue(state, now, effects)
        return FeedResult(True, tuple(effects))

    def _pick(self, branches: Iterable[Branch]) -> Branch | None:
        for branch in branches:
            if all(self._guard(name) is expected for name, expected in branch.guards):
                return branch
        return None

    def _guard(self, name: str) -> bool:
        if name == 'has_next_point':
            return bool(self._queue)
        if name == 'has_current_point':
            return self._current is not None
        if name == 'retries_left':
            return self._retries < self.spec.max_retries
        if name == 'is_undocked':
            return self._undocked
        if name == 'cancelled':
            return self._cancelled
        raise WorkflowStateError(f'unknown guard {name!r}')

    def _run(self, actions: Iterable[str], effects: list[Effect]) -> None:
        for action in actions:
            if action == 'advance_point':
                if not self._queue:
                    raise WorkflowStateError(f'{self.agent_id}: advance_point with no queued point (guard it)')
                self._current = self._queue.pop(0)
                self._retries = 0
            elif action == 'count_retry':
                self._retries += 1
            elif action == 'reset_retries':
                self._retries = 0
            elif action in ('mark_point_done', 'skip_point'):
                if self._current is not None:
                    effects.append(PointFinished(self.agent_id, self._current.point_id, action == 'mark_point_done'))
                    self._current = None
            elif action == 'set_undocked':
                self._undocked = True
            elif action == 'set_docked':
                self._undocked = False
            elif action == 'mark_cancelled':
                self._cancelled = True
            elif action == 'hold':
                self._held = True
            elif action == 'release':
                self._held = False
            else:
                raise WorkflowStateError(f'unknown action {action!r}')

    def _enter(self, name: str, now: float, effects: list[Effect]) -> None:
        self._pending = None
        self._step_held = False
        state = self.spec.state(name)
        for _ in range(_MAX_CHOICES):
            if not state.is_choice:
                break
            branch = self._pick(state.choose)
            if branch is None or branch.target is None:
                raise WorkflowStateError(f'choice state {state.name} has no matching branch')
            self._run(branch.actions, effects)
            state = self.spec.state(branch.target)
        else:
            raise WorkflowStateError(f'more than {_MAX_CHOICES} choice states in one transition')
        self._state = state.name
        if state.step is None:
            return
        if self._held:
            self._step_held = True
            return
        self._issue(state, now, effects)

    def _issue(self, state: StateSpec, now: float, effects: list[Effect]) -> None:
        step = state.step
        if step is None:
            raise WorkflowStateError(f'state {state.name!r} has no step to issue')
        self._step_no += 1
        request_id = str(uuid.uuid5(_REQUEST_NAMESPACE, f'{self.mission_id}/{self.agent_id}/{self._step_no}'))
        args = {key: self._render(value, state.name) for key, value in step.args}
        point_id = self._current.point_id if self._current is not None else ''
        self._pending = _Pending(request_id, step.kind, now + step.timeout_sec, point_id)
        effects.append(
            StepRequest(
                request_id=request_id,
                agent_id=self.agent_id,
                kind=step.kind,
                args=args,
                priority=step.priority,
                ttl_sec=step.ttl_sec,
                issued_at=now,
                state=state.name,
                point_id=point_id,
            )
        )

    def _render(self, value: Any, state: str) -> Any:
        if not isinstance(value, str):
            return value
        match = TEMPLATE.match(value)
        if match is None:
            return value
        name = match.group(1)
        if name.startswith('point.'):
            if self._current is None:
                raise WorkflowStateError(f'{self.agent_id}: state {state} uses ${{{name}}} without a current point')
            return {'point.id': self._current.point_id, 'point.x': self._current.x, 'point.y': self._current.y}[name]
        values: dict[str, Any] = {
            'home.x': self.home[0],
            'home.y': self.home[1],
            'agent_id': self.agent_id,
            'mission_id': self.mission_id,
            'attempt': self._retries + 1,
        }
        return values[name]

    # ----- journaling --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe snapshot; `from_dict` with the same spec restores an identical instance."""
        pending = self._pending
        return {
            'workflow': self.spec.name,
            'mission_id': self.mission_id,
            'agent_id': self.agent_id,
            'home': [self.home[0], self.home[1]],
            'state': self._state,
            'queue': [[p.point_id, p.x, p.y] for p in self._queue],
            'current': [self._current.point_id, self._current.x, self._current.y] if self._current else None,
            'retries': self._retries,
            'undocked': self._undocked,
            'cancelled': self._cancelled,
            'held': self._held,
            'step_held': self._step_held,
            'step_no': self._step_no,
            'pending': None
            if pending is None
            else {
                'request_id': pending.request_id,
                'kind': pending.kind,
                'deadline': pending.deadline,
                'point_id': pending.point_id,
            },
        }

    @classmethod
    def from_dict(cls, spec: WorkflowSpec, data: dict[str, Any]) -> WorkflowInstance:
        """Restore a snapshot; raises WorkflowStateError when it does not belong to `spec` or is malformed."""
        try:
            if data['workflow'] != spec.name:
                raise WorkflowStateError(f'snapshot of workflow {data["workflow"]!r} given spec {spec.name!r}')
            instance = cls(
                spec,
                mission_id=str(data['mission_id']),
                agent_id=str(data['agent_id']),
                home=(float(data['home'][0]), float(data['home'][1])),
                points=[Point(str(p[0]), float(p[1]), float(p[2])) for p in data['queue']],
            )
            state = str(data['state'])
            if state:
                spec.state(state)
            instance._state = state
            current = data['current']
            instance._current = Point(str(current[0]), float(current[1]), float(current[2])) if current else None
            instance._retries = int(data['retries'])
            instance._undocked = bool(data['undocked'])
            instance._cancelled = bool(data['cancelled'])
            instance._held = bool(data['held'])
            instance._step_held = bool(data['step_held'])
            instance._step_no = int(data['step_no'])
            pending = data['pending']
            instance._pending = (
                None
                if pending is None
                else _Pending(
                    str(pending['request_id']),
                    str(pending['kind']),
                    float(pending['deadline']),
                    str(pending['point_id']),
                )
            )
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise WorkflowStateError(f'malformed workflow snapshot: {error!r}') from None
        return instance
