"""The validated, immutable shape of a workflow: states, steps, guarded transitions and the event vocabulary."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from fleet_core.model import Outcome, Priority


class WorkflowError(ValueError):
    """An invalid workflow definition; the message names the file, the line and the offending key."""

    def __init__(self, source: str, line: int, key: str, problem: str) -> None:
        self.source = source
        self.line = line
        self.key = key
        self.problem = problem
        super().__init__(f'{source}:{line}: {key}: {problem}')


class Event(enum.Enum):
    """Everything a workflow instance can react to."""

    # Terminal outcomes of the command issued by the current step (mirror model.Outcome).
    SUCCEEDED = 'SUCCEEDED'
    FAILED = 'FAILED'
    EXPIRED = 'EXPIRED'
    REJECTED = 'REJECTED'
    CANCELLED = 'CANCELLED'
    # The current step produced no outcome within its timeout.
    TIMEOUT = 'TIMEOUT'
    # Health of the agent running the instance.
    AGENT_LOST = 'AGENT_LOST'
    AGENT_RECOVERED = 'AGENT_RECOVERED'
    # Operator requests.
    CANCEL = 'CANCEL'
    PAUSE = 'PAUSE'
    RESUME = 'RESUME'
    # The mission gave the instance more points (e.g. a handoff from a lost agent).
    POINTS_ADDED = 'POINTS_ADDED'

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> Event:
        return cls(outcome.name)


STEP_EVENTS = frozenset({Event.SUCCEEDED, Event.FAILED, Event.EXPIRED, Event.REJECTED, Event.CANCELLED, Event.TIMEOUT})
"""Events that answer the command of the current step; only step states can receive them."""

GUARDS = frozenset({'has_next_point', 'has_current_point', 'retries_left', 'is_undocked', 'cancelled'})
"""Conditions a branch may test (prefix with `not ` to negate)."""

ACTIONS = frozenset(
    {
        'advance_point',  # take the next queued point as the current one and reset the retry counter
        'count_retry',  # spend one retry of the current step
        'reset_retries',
        'mark_point_done',  # the current point is finished: report it to the mission
        'skip_point',  # give up on the current point: report it undone
        'set_undocked',
        'set_docked',
        'mark_cancelled',
        'hold',  # pause: do not issue the next step until `release`
        'release',
    }
)

TEMPLATE_VARIABLES = frozenset(
    {'point.id', 'point.x', 'point.y', 'home.x', 'home.y', 'agent_id', 'mission_id', 'attempt'}
)
"""Names a step argument may reference as the whole string "${name}"."""

TEMPLATE = re.compile(r'^\$\{([a-z_.]+)\}$')


@dataclass(frozen=True, slots=True)
class Branch:
    """One guarded way out: when every guard holds, run `actions` and go to `target` (None: stay, no new step)."""

    guards: tuple[tuple[str, bool], ...]  # (guard name, expected value)
    actions: tuple[str, ...]
    target: str | None


@dataclass(frozen=True, slots=True)
class StepSpec:
    """The command a state issues on entry: its kind, argument template, priority and time limits."""

    kind: str
    args: tuple[tuple[str, Any], ...]
    priority: Priority
    ttl_sec: float
    timeout_sec: float


@dataclass(frozen=True, slots=True)
class StateSpec:
    """A state is a step state (issues `step`), a choice state (`choose`, left at once) or a wait state."""

    name: str
    step: StepSpec | None
    choose: tuple[Branch, ...]
    on: tuple[tuple[Event, tuple[Branch, ...]], ...]
    result: str | None  # 'succeeded' | 'failed' | 'cancelled': the agent's part of the mission ends here

    def branches(self, event: Event) -> tuple[Branch, ...] | None:
        for candidate, branches in self.on:
            if candidate is event:
                return branches
        return None

    @property
    def is_choice(self) -> bool:
        return bool(self.choose)


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A validated workflow; build it with `load_workflow`."""

    name: str
    source: str
    initial: str
    max_retries: int
    states: tuple[StateSpec, ...]
    _index: dict[str, StateSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, '_index', {state.name: state for state in self.states})

    def state(self, name: str) -> StateSpec:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f'workflow {self.name!r} has no state {name!r}') from None
