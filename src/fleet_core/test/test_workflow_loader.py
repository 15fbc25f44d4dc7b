"""Tests for fleet_core.workflow.loader: every invalid definition is refused with file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_core.model import Priority
from fleet_core.workflow import Event, WorkflowError, load_workflow, parse_workflow

REPO = Path(__file__).resolve().parents[3]
INSPECTION = REPO / 'config' / 'workflows' / 'inspection.yaml'

MINIMAL = """\
workflow: tiny
initial: work
events: [SUCCEEDED, FAILED, CANCEL]
defaults:
  CANCEL: {to: done}
states:
  work:
    step: {kind: noop}
    on:
      SUCCEEDED: {to: done}
      FAILED: {to: done}
  done:
    result: succeeded
"""


def parse(text: str) -> object:
    return parse_workflow(textwrap.dedent(text), source='wf.yaml')


def error_of(text: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        parse(text)
    return caught.value


def test_inspection_workflow_loads_with_expected_steps() -> None:
    spec = load_workflow(INSPECTION)
    assert spec.name == 'inspection'
    assert spec.initial == 'start'
    kinds = {state.name: state.step.kind for state in spec.states if state.step is not None}
    assert kinds == {
        'undock': 'undock',
        'goto_point': 'goto',
        'inspect': 'inspect',
        'report': 'report',
        'return_home': 'goto',
        'dock': 'dock',
    }
    goto = spec.state('goto_point').step
    assert goto is not None
    assert dict(goto.args) == {'x': '${point.x}', 'y': '${point.y}', 'point_id': '${point.id}'}
    assert goto.priority is Priority.NORMAL
    assert goto.ttl_sec <= goto.timeout_sec
    # `on` must stay a key, not YAML 1.1's boolean True.
    assert spec.state('lost').branches(Event.AGENT_RECOVERED) is not None


def test_minimal_workflow_and_defaults_fill_step_states() -> None:
    spec = parse(MINIMAL)
    work = spec.state('work')
    branches = work.branches(Event.CANCEL)
    assert branches is not None and branches[0].target == 'done'
    # A finished state takes no defaults.
    assert spec.state('done').branches(Event.CANCEL) is None


def test_error_names_file_line_and_key_for_unknown_target() -> None:
    error = error_of(MINIMAL.replace('SUCCEEDED: {to: done}', 'SUCCEEDED: {to: nowhere}'))
    assert error.source == 'wf.yaml'
    assert error.key == 'states.work'
    assert error.line == 7
    assert 'nowhere' in str(error) and str(error).startswith('wf.yaml:7: states.work:')


def test_unreachable_state_is_refused() -> None:
    error = error_of(MINIMAL + '  orphan:\n    result: failed\n')
    assert error.key == 'states.orphan'
    assert error.line == 14
    assert 'unreachable' in error.problem


def test_missing_transition_for_declared_event() -> None:
    error = error_of(MINIMAL.replace('      FAILED: {to: done}\n', ''))
    assert error.key == 'states.work'
    assert 'FAILED' in error.problem


def test_unknown_event_name() -> None:
    error = error_of(MINIMAL.replace('FAILED: {to: done}', 'EXPLODED: {to: done}'))
    assert error.key == 'states.work.on.EXPLODED'
    assert error.line == 11
    assert 'unknown event' in error.problem


def test_undeclared_event_in_transition() -> None:
    error = error_of(MINIMAL.replace('FAILED: {to: done}', 'FAILED|TIMEOUT: {to: done}'))
    assert 'TIMEOUT' in error.problem and 'not declared' in error.problem


def test_unknown_event_in_events_list() -> None:
    error = error_of(MINIMAL.replace('[SUCCEEDED, FAILED, CANCEL]', '[SUCCEEDED, FAILED, CANCEL, BOOM]'))
    assert error.key == 'events[3]'
    assert error.line == 3


@pytest.mark.parametrize(
    ('old', 'new', 'key'),
    [
        ('max', 'max', 'params.max_retries'),
        ('kind: noop', 'kind: 7', 'states.work.step.kind'),
        ('kind: noop', 'kind: noop, priority: SAFETY', 'states.work.step.priority'),
        ('kind: noop', 'kind: noop, ttl_sec: -1', 'states.work.step.ttl_sec'),
        ('kind: noop', "kind: noop, args: {x: '${point.z}'}", 'states.work.step.args.x'),
        ('kind: noop', 'kind: noop, args: {x: [1]}', 'states.work.step.args.x'),
        ('result: succeeded', 'result: maybe', 'states.done.result'),
        ('SUCCEEDED: {to: done}', 'SUCCEEDED: {to: done, if: sunny}', 'states.work.on.SUCCEEDED.if'),
        ('SUCCEEDED: {to: done}', 'SUCCEEDED: {to: done, do: dance}', 'states.work.on.SUCCEEDED.do'),
        ('SUCCEEDED: {to: done}', 'SUCCEEDED: {}', 'states.work.on'),
        ('SUCCEEDED: {to: done}', 'SUCCEEDED: 3', 'states.work.on.SUCCEEDED'),
        ('initial: work', 'initial: 5', 'initial'),
        ('workflow: tiny', 'workflow: Tiny Flow', 'workflow'),
        ('    result: succeeded', '    result: succeeded\n    colour: red', 'states.done.colour'),
    ],
)
def test_bad_values_name_their_key(old: str, new: str, key: str) -> None:
    text = MINIMAL.replace('workflow: tiny', 'workflow: tiny\nparams: {max_retries: -1}') if old == 'max' else MINIMAL
    if old != 'max':
        assert old in text
        text = text.replace(old, new)
    error = error_of(text)
    assert error.key == key
    assert error.line > 0


def test_choice_cycle_is_refused() -> None:
    text = (
        MINIMAL.replace('initial: work', 'initial: a')
        + '  a:\n    choose: [{if: has_next_point, to: b}, {to: work}]\n  b:\n    choose: [{to: a}]\n'
    )
    error = error_of(text)
    assert 'cycle' in error.problem


def test_choice_needs_an_else_branch() -> None:
    text = MINIMAL.replace('initial: work', 'initial: a') + '  a:\n    choose: [{if: has_next_point, to: work}]\n'
    assert 'else' in error_of(text).problem


def test_step_event_in_wait_state_is_refused() -> None:
    error = error_of(MINIMAL.replace('    result: succeeded', '    on: {SUCCEEDED: {to: work}}'))
    assert 'only reaches step states' in error.problem


def test_duplicate_key_and_bad_yaml_report_lines() -> None:
    error = error_of(MINIMAL.replace('  done:\n', '  done:\n    result: failed\n'))
    assert error.line == 14 and 'duplicate' in error.problem
    error = error_of('workflow: [unclosed\n')
    assert error.key == '<document>'


def test_ttl_above_timeout_is_refused() -> None:
    text = MINIMAL.replace('workflow: tiny', 'workflow: tiny\nparams: {step_timeout_sec: 5, step_ttl_sec: 10}')
    assert error_of(text).key == 'params.step_ttl_sec'


def test_load_workflow_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / 'broken.yaml'
    path.write_text(MINIMAL.replace('initial: work', 'initial: nope'))
    with pytest.raises(WorkflowError, match=r'broken\.yaml:2: initial:'):
        load_workflow(path)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(['to', 'done', 'work', 'SUCCEEDED']))
_keys = st.sampled_from(
    ['workflow', 'initial', 'events', 'states', 'defaults', 'params', 'step', 'on', 'choose', 'kind', 'to', 'if', 'do']
)
_trees = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4), max_leaves=12
)


def _error_of(text: str, source: str) -> WorkflowError | None:
    """The WorkflowError that parsing `text` raises, None when it parses (any other exception propagates)."""
    try:
        parse_workflow(text, source=source)
    except WorkflowError as error:
        return error
    return None


@settings(max_examples=150, deadline=None)
@given(tree=_trees)
def test_arbitrary_documents_raise_only_workflow_error(tree: object) -> None:
    error = _error_of(yaml.safe_dump(tree), 'fuzz.yaml')
    assert error is None or str(error).startswith('fuzz.yaml:')


@settings(max_examples=60, deadline=None)
@given(drop=st.integers(min_value=0, max_value=200))
def test_mutilated_inspection_never_crashes(drop: int) -> None:
    lines = INSPECTION.read_text().splitlines()
    index = drop % len(lines)
    error = _error_of('\n'.join(lines[:index] + lines[index + 1 :]), 'cut.yaml')
    assert error is None or (error.line >= 0 and error.key)
