"""Build a WorkflowSpec from YAML text and reject every definition the engine could not run deterministically."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from fleet_core.model import Priority
from fleet_core.workflow._marked_yaml import MarkedDict, MarkedList, line_of, load_marked
from fleet_core.workflow.spec import (
    ACTIONS,
    GUARDS,
    STEP_EVENTS,
    TEMPLATE,
    TEMPLATE_VARIABLES,
    Branch,
    Event,
    StateSpec,
    StepSpec,
    WorkflowError,
    WorkflowSpec,
)

_TOP_KEYS = frozenset({'workflow', 'initial', 'params', 'events', 'defaults', 'states'})
_PARAM_KEYS = frozenset({'max_retries', 'step_timeout_sec', 'step_ttl_sec'})
_STATE_KEYS = frozenset({'step', 'choose', 'on', 'result', 'description'})
_STEP_KEYS = frozenset({'kind', 'args', 'priority', 'ttl_sec', 'timeout_sec'})
_BRANCH_KEYS = frozenset({'if', 'do', 'to'})
_RESULTS = frozenset({'succeeded', 'failed', 'cancelled'})
_NAME = re.compile(r'^[a-z][a-z0-9_]*$')


def load_workflow(path: str | Path) -> WorkflowSpec:
    """Read and validate one workflow file; raises WorkflowError (or OSError when it cannot be read)."""
    path = Path(path)
    return parse_workflow(path.read_text(encoding='utf-8'), source=str(path))


def parse_workflow(text: str, *, source: str = '<string>') -> WorkflowSpec:
    """Validate workflow YAML `text`; `source` names it in error messages."""
    return _Parser(source).parse(text)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, container: Any, key: str | int | None, path: str, problem: str) -> WorkflowError:
        return WorkflowError(self.source, line_of(container, key), path, problem)

    def mapping(self, parent: Any, key: str | int, value: Any, path: str) -> MarkedDict:
        if not isinstance(value, MarkedDict):
            raise self.fail(parent, key, path, f'must be a mapping, got {type(value).__name__}')
        return value

    def check_keys(self, data: MarkedDict, allowed: frozenset[str], path: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(data, key, f'{path}.{key}' if path else key, f'unknown key; allowed: {sorted(allowed)}')

    def parse(self, text: str) -> WorkflowSpec:
        try:
            data = load_marked(text)
        except yaml.YAMLError as error:
            mark = getattr(error, 'problem_mark', None)
            line = mark.line + 1 if mark is not None else 0
            raise WorkflowError(self.source, line, '<document>', f'not valid YAML: {error}') from None
        if not isinstance(data, MarkedDict):
            raise WorkflowError(self.source, 1, '<document>', 'must be a mapping with keys workflow, initial, states')
        self.check_keys(data, _TOP_KEYS, '')
        for required in ('workflow', 'initial', 'states', 'events'):
            if required not in data:
                raise self.fail(data, None, required, 'required key is missing')
        name = data['workflow']
        if not isinstance(name, str) or not _NAME.match(name):
            raise self.fail(data, 'workflow', 'workflow', 'must be a lower_snake_case name')
        max_retries, timeout, ttl = self.params(data)
        events = self.events(data)
        defaults = self.transitions(data, 'defaults', data.get('defaults', MarkedDict()), events, 'defaults')
        states_data = self.mapping(data, 'states', data['states'], 'states')
        if not states_data:
            raise self.fail(data, 'states', 'states', 'must declare at least one state')
        states = [
            self.state(states_data, state_name, events=events, defaults=defaults, timeout=timeout, ttl=ttl)
            for state_name in states_data
        ]
        initial = data['initial']
        if not isinstance(initial, str) or initial not in states_data:
            raise self.fail(data, 'initial', 'initial', f'unknown state {initial!r}; states: {sorted(states_data)}')
        self.check_graph(states_data, states, initial)
        return WorkflowSpec(
            name=name, source=self.source, initial=initial, max_retries=max_retries, states=tuple(states)
        )

    def params(self, data: MarkedDict) -> tuple[int, float, float]:
        params = self.mapping(data, 'params', data.get('params', MarkedDict()), 'params') if 'params' in data else None
        values: dict[str, Any] = {'max_retries': 2, 'step_timeout_sec': 60.0, 'step_ttl_sec': 45.0}
        if params is not None:
            self.check_keys(params, _PARAM_KEYS, 'params')
            values.update(params)
        retries = values['max_retries']
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise self.fail(params, 'max_retries', 'params.max_retries', 'must be an integer >= 0')
        timeout = self.seconds(params, 'step_timeout_sec', values['step_timeout_sec'], 'params.step_timeout_sec')
        ttl = self.seconds(params, 'step_ttl_sec', values['step_ttl_sec'], 'params.step_ttl_sec')
        if ttl > timeout:
            # A step must never time out while its command could still be executed (G2 stays meaningful).
            raise self.fail(params, 'step_ttl_sec', 'params.step_ttl_sec', 'must not exceed params.step_timeout_sec')
        return retries, timeout, ttl

    def seconds(self, container: Any, key: str, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise self.fail(container, key, path, f'must be a positive number of seconds, got {value!r}')
        return float(value)

    def events(self, data: MarkedDict) -> frozenset[Event]:
        raw = data['events']
        if not isinstance(raw, MarkedList) or not raw:
            raise self.fail(data, 'events', 'events', 'must be a non-empty list of event names')
        seen: set[Event] = set()
        for index, item in enumerate(raw):
            event = self.event_name(raw, index, item, f'events[{index}]')
            if event in seen:
                raise self.fail(raw, index, f'events[{index}]', f'event {item} is listed twice')
            seen.add(event)
        return frozenset(seen)

    def event_name(self, container: Any, key: str | int, item: Any, path: str) -> Event:
        try:
            return Event(item)
        except ValueError:
            raise self.fail(
                container, key, path, f'unknown event {item!r}; known: {[e.value for e in Event]}'
            ) from None

    def transitions(
        self, parent: Any, parent_key: str, raw: Any, events: frozenset[Event], path: str
    ) -> dict[Event, tuple[Branch, ...]]:
        data = self.mapping(parent, parent_key, raw, path)
        result: dict[Event, tuple[Branch, ...]] = {}
        for key, value in data.items():
            # "FAILED|EXPIRED" shares one transition between several events.
            for part in key.split('|'):
                event = self.event_name(data, key, part.strip(), f'{path}.{key}')
                if event not in events:
                    raise self.fail(data, key, f'{path}.{key}', f'event {event.value} is not declared in `events`')
                if event in result:
                    raise self.fail(data, key, f'{path}.{key}', f'event {event.value} has two transitions')
                result[event] = self.branches(data, key, value, f'{path}.{key}')
        return result

    def branches(self, parent: Any, key: str | int, value: Any, path: str) -> tuple[Branch, ...]:
        if isinstance(value, MarkedDict):
            return (self.branch(value, path),)
        if isinstance(value, MarkedList) and value:
            branches = tuple(
                self.branch(self.mapping(value, index, item, f'{path}[{index}]'), f'{path}[{index}]')
                for index, item in enumerate(value)
            )
            for index, branch in enumerate(branches[:-1]):
                if not branch.guards:
                    raise self.fail(
                        value, index + 1, f'{path}[{index + 1}]', 'unreachable: an earlier branch has no `if`'
                    )
            return branches
        raise self.fail(parent, key, path, 'must be a transition mapping {if, do, to} or a non-empty list of them')

    def branch(self, data: MarkedDict, path: str) -> Branch:
        self.check_keys(data, _BRANCH_KEYS, path)
        guards = tuple(self.guard(data, item, f'{path}.if') for item in self.names(data, 'if', f'{path}.if'))
        actions = self.names(data, 'do', f'{path}.do')
        for action in actions:
            if action not in ACTIONS:
                raise self.fail(data, 'do', f'{path}.do', f'unknown action {action!r}; known: {sorted(ACTIONS)}')
        target = data.get('to')
        if target is not None and not isinstance(target, str):
            raise self.fail(data, 'to', f'{path}.to', 'must be a state name')
        return Branch(guards=guards, actions=actions, target=target)

    def names(self, data: MarkedDict, key: str, path: str) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        items: Iterable[Any] = [value] if isinstance(value, str) else value
        if not isinstance(value, str | MarkedList) or not all(isinstance(item, str) for item in items):
            raise self.fail(data, key, path, 'must be a name or a list of names')
        return tuple(items)

    def guard(self, data: MarkedDict, text: str, path: str) -> tuple[str, bool]:
        negated = text.startswith('not ')
        name = text[4:].strip() if negated else text.strip()
        if name not in GUARDS:
            raise self.fail(data, 'if', path, f'unknown guard {name!r}; known: {sorted(GUARDS)}')
        return name, not negated

    def state(
        self,
        states: MarkedDict,
        name: str,
        *,
        events: frozenset[Event],
        defaults: dict[Event, tuple[Branch, ...]],
        timeout: float,
        ttl: float,
    ) -> StateSpec:
        path = f'states.{name}'
        if not _NAME.match(name):
            raise self.fail(states, name, path, 'state names must be lower_snake_case')
        data = self.mapping(states, name, states[name], path)
        self.check_keys(data, _STATE_KEYS, path)
        step = self.step(data, path, timeout, ttl) if 'step' in data else None
        choose = self.branches(data, 'choose', data['choose'], f'{path}.choose') if 'choose' in data else ()
        own = self.transitions(data, 'on', data['on'], events, f'{path}.on') if 'on' in data else {}
        result = data.get('result')
        if result is not None and result not in _RESULTS:
            raise self.fail(data, 'result', f'{path}.result', f'must be one of {sorted(_RESULTS)}')
        if choose:
            if step is not None or own or result is not None:
                raise self.fail(data, 'choose', f'{path}.choose', 'a choice state has no step, `on` or `result`')
            if choose[-1].guards:
                raise self.fail(data, 'choose', f'{path}.choose', 'the last branch must have no `if` (it is the else)')
            if any(branch.target is None for branch in choose):
                raise self.fail(data, 'choose', f'{path}.choose', 'every branch of a choice needs `to`')
        if step is not None and result is not None:
            raise self.fail(data, 'result', f'{path}.result', "a step state cannot end the agent's part")
        if step is not None:
            for event, branches in own.items():
                if event in STEP_EVENTS and any(branch.target is None for branch in branches):
                    # The step's command has ended: staying would leave the state with nothing in flight.
                    raise self.fail(data, 'on', f'{path}.on', f'every {event.value} branch needs `to`')
        else:
            for event in own:
                if event in STEP_EVENTS:
                    raise self.fail(data, 'on', f'{path}.on', f'{event.value} only reaches step states')
        on = dict(own)
        if result is None and not choose:
            for event, branches in defaults.items():
                if step is not None or event not in STEP_EVENTS:
                    on.setdefault(event, branches)
            receivable = events if step is not None else events - STEP_EVENTS
            missing = sorted(event.value for event in receivable if event not in on)
            if missing:
                raise self.fail(
                    states, name, path, f'no transition for declared events {missing} (add to `on` or `defaults`)'
                )
        return StateSpec(
            name=name, step=step, choose=choose, on=tuple(sorted(on.items(), key=lambda kv: kv[0].value)), result=result
        )

    def step(self, data: MarkedDict, path: str, timeout: float, ttl: float) -> StepSpec:
        step = self.mapping(data, 'step', data['step'], f'{path}.step')
        self.check_keys(step, _STEP_KEYS, f'{path}.step')
        kind = step.get('kind')
        if not isinstance(kind, str) or not _NAME.match(kind):
            raise self.fail(step, 'kind', f'{path}.step.kind', 'must be a lower_snake_case command kind')
        args_data = (
            self.mapping(step, 'args', step.get('args', MarkedDict()), f'{path}.step.args') if 'args' in step else {}
        )
        args: list[tuple[str, Any]] = []
        for key, value in args_data.items():
            key_path = f'{path}.step.args.{key}'
            if isinstance(value, MarkedDict | MarkedList) or value is None:
                raise self.fail(args_data, key, key_path, 'must be a string, number or boolean')
            if isinstance(value, str) and '${' in value:
                match = TEMPLATE.match(value)
                if match is None or match.group(1) not in TEMPLATE_VARIABLES:
                    raise self.fail(
                        args_data,
                        key,
                        key_path,
                        f'template must be "${{name}}" with name in {sorted(TEMPLATE_VARIABLES)}',
                    )
            args.append((key, value))
        priority_name = step.get('priority', 'NORMAL')
        if priority_name not in Priority.__members__ or priority_name == 'SAFETY':
            # Workflow steps are ordinary work; SAFETY is reserved for e-stop and operator safety commands.
            raise self.fail(step, 'priority', f'{path}.step.priority', 'must be one of LOW, NORMAL, HIGH')
        step_timeout = self.seconds(step, 'timeout_sec', step.get('timeout_sec', timeout), f'{path}.step.timeout_sec')
        step_ttl = self.seconds(step, 'ttl_sec', step.get('ttl_sec', min(ttl, step_timeout)), f'{path}.step.ttl_sec')
        if step_ttl > step_timeout:
            raise self.fail(step, 'ttl_sec', f'{path}.step.ttl_sec', 'must not exceed the step timeout')
        return StepSpec(
            kind=kind, args=tuple(args), priority=Priority[priority_name], ttl_sec=step_ttl, timeout_sec=step_timeout
        )

    def check_graph(self, states_data: MarkedDict, states: list[StateSpec], initial: str) -> None:
        by_name = {state.name: state for state in states}
        for state in states:
            path = f'states.{state.name}'
            for branch in self.all_branches(state):
                if branch.target is not None and branch.target not in by_name:
                    raise self.fail(states_data, state.name, path, f'transition to unknown state {branch.target!r}')
        reachable = {initial}
        frontier = [initial]
        while frontier:
            for branch in self.all_branches(by_name[frontier.pop()]):
                if branch.target is not None and branch.target not in reachable:
                    reachable.add(branch.target)
                    frontier.append(branch.target)
        for state in states:
            if state.name not in reachable:
                raise self.fail(
                    states_data, state.name, f'states.{state.name}', f'unreachable from initial {initial!r}'
                )
        # Choice states are left immediately: a cycle of them would never settle.
        for state in states:
            seen = [state.name]
            self.walk_choices(states_data, by_name, state, seen)

    def walk_choices(
        self, states_data: MarkedDict, by_name: dict[str, StateSpec], state: StateSpec, seen: list[str]
    ) -> None:
        for branch in state.choose:
            target = by_name[branch.target] if branch.target is not None else state
            if not target.is_choice:
                continue
            if target.name in seen:
                cycle = ' -> '.join([*seen, target.name])
                raise self.fail(states_data, state.name, f'states.{state.name}', f'choice states form a cycle: {cycle}')
            self.walk_choices(states_data, by_name, target, [*seen, target.name])

    @staticmethod
    def all_branches(state: StateSpec) -> Iterable[Branch]:
        yield from state.choose
        for _event, branches in state.on:
            yield from branches
