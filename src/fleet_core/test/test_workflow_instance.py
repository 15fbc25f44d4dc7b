"""Tests for fleet_core.workflow.instance: the inspection workflow's behaviour, determinism and snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_core.workflow import (
    Event,
    FeedResult,
    Point,
    PointFinished,
    StepRequest,
    WorkflowInstance,
    WorkflowStateError,
    load_workflow,
)

SPEC = load_workflow(Path(__file__).resolve().parents[3] / 'config' / 'workflows' / 'inspection.yaml')
POINTS = [Point('p1', 1.0, 2.0), Point('p2', 3.0, 4.0)]


def make(points: list[Point] | None = None) -> WorkflowInstance:
    chosen = POINTS if points is None else points
    return WorkflowInstance(SPEC, mission_id='m1', agent_id='r1', home=(-1.0, -2.0), points=chosen)


def steps(result: FeedResult) -> list[StepRequest]:
    return [effect for effect in result.effects if isinstance(effect, StepRequest)]


def ok(instance: WorkflowInstance, now: float = 0.0, event: Event = Event.SUCCEEDED) -> FeedResult:
    return instance.feed(event, now, request_id=instance.pending_request_id)


def test_happy_path_visits_every_point_then_docks() -> None:
    instance = make()
    issued = steps(instance.start(0.0))
    finished: list[str] = []
    for _ in range(20):
        if instance.result is not None:
            break
        result = ok(instance)
        issued += steps(result)
        finished += [e.point_id for e in result.effects if isinstance(e, PointFinished) and e.done]
    assert [(s.kind, s.point_id) for s in issued] == [
        ('undock', ''),
        ('goto', 'p1'),
        ('inspect', 'p1'),
        ('report', 'p1'),
        ('goto', 'p2'),
        ('inspect', 'p2'),
        ('report', 'p2'),
        ('goto', ''),
        ('dock', ''),
    ]
    assert issued[1].args == {'x': 1.0, 'y': 2.0, 'point_id': 'p1'}
    assert issued[7].args == {'x': -1.0, 'y': -2.0, 'point_id': 'home'}
    assert finished == ['p1', 'p2']
    assert instance.result == 'succeeded'
    assert len({s.request_id for s in issued}) == len(issued)


def test_agent_without_points_is_done_at_once() -> None:
    instance = make([])
    assert steps(instance.start(0.0)) == []
    assert instance.result == 'succeeded'


def test_failed_goto_is_retried_then_the_point_is_skipped() -> None:
    instance = make()
    instance.start(0.0)
    ok(instance)  # undock
    gotos = []
    skipped = []
    for _ in range(SPEC.max_retries + 1):
        result = ok(instance, event=Event.FAILED)
        gotos += steps(result)
        skipped += [e.point_id for e in result.effects if isinstance(e, PointFinished) and not e.done]
    assert skipped == ['p1']
    # Retries re-issue goto p1 as new commands (new ids); then p2 starts.
    assert [s.point_id for s in gotos] == ['p1'] * SPEC.max_retries + ['p2']
    assert instance.state == 'goto_point'


def test_undock_failure_exhausts_into_failed() -> None:
    instance = make()
    instance.start(0.0)
    for _ in range(SPEC.max_retries + 1):
        ok(instance, event=Event.EXPIRED)
    assert instance.result == 'failed'
    assert instance.pending_request_id is None


def test_stale_or_missing_request_id_is_ignored() -> None:
    instance = make()
    instance.start(0.0)
    assert not instance.feed(Event.SUCCEEDED, 0.0, request_id='not-the-pending-one').handled
    assert not instance.feed(Event.SUCCEEDED, 0.0).handled
    assert instance.state == 'undock'


def test_pause_holds_the_next_step_until_resume() -> None:
    instance = make()
    instance.start(0.0)
    assert instance.feed(Event.PAUSE, 0.0).handled
    assert steps(ok(instance)) == []  # undock finished; goto held
    assert instance.state == 'goto_point' and instance.pending_request_id is None
    released = steps(instance.feed(Event.RESUME, 1.0))
    assert [(s.kind, s.point_id) for s in released] == [('goto', 'p1')]
    assert released[0].issued_at == 1.0


def test_cancel_goes_home_and_docks() -> None:
    instance = make()
    instance.start(0.0)
    ok(instance)
    home = steps(instance.feed(Event.CANCEL, 0.0))
    assert [(s.kind, s.args['point_id']) for s in home] == [('goto', 'home')]
    # A second cancel while homing changes nothing.
    assert steps(instance.feed(Event.CANCEL, 0.0)) == []
    dock = steps(ok(instance))
    assert [s.kind for s in dock] == ['dock']
    ok(instance)
    assert instance.result == 'succeeded'


def test_cancel_during_undock_lets_it_finish_then_goes_home() -> None:
    instance = make()
    instance.start(0.0)
    instance.take_points()
    assert steps(instance.feed(Event.CANCEL, 0.0)) == []
    assert [s.kind for s in steps(ok(instance))] == ['goto']
    assert instance.state == 'return_home'


def test_lost_then_recovered_rejoins_with_its_points() -> None:
    instance = make()
    instance.start(0.0)
    ok(instance)  # undocked, goto p1 pending
    instance.feed(Event.AGENT_LOST, 0.0)
    assert instance.state == 'lost' and instance.pending_request_id is None
    taken = instance.take_points()
    assert [p.point_id for p in taken] == ['p1', 'p2']
    instance.add_points([Point('p9', 9.0, 9.0)])
    resumed = steps(instance.feed(Event.AGENT_RECOVERED, 0.0))
    assert [(s.kind, s.point_id) for s in resumed] == [('goto', 'p9')]


def test_recovered_without_points_goes_home() -> None:
    instance = make()
    instance.start(0.0)
    instance.feed(Event.AGENT_LOST, 0.0)
    instance.take_points()
    assert [s.kind for s in steps(instance.feed(Event.AGENT_RECOVERED, 0.0))] == ['goto']
    assert instance.state == 'return_home'


def test_points_added_to_a_docked_agent_restart_it() -> None:
    instance = make([])
    instance.start(0.0)
    instance.add_points([Point('p5', 5.0, 5.0)])
    assert [s.kind for s in steps(instance.feed(Event.POINTS_ADDED, 0.0))] == ['undock']


def test_timeout_uses_the_step_deadline() -> None:
    instance = make()
    (undock,) = steps(instance.start(10.0))
    assert instance.pending_deadline == 10.0 + SPEC.state('undock').step.timeout_sec  # type: ignore[union-attr]  # the 'undock' state has a step
    assert undock.ttl_sec <= SPEC.state('undock').step.timeout_sec  # type: ignore[union-attr]  # the 'undock' state has a step
    assert ok(instance, event=Event.TIMEOUT).handled
    assert instance.state == 'undock'  # retried


def test_start_twice_and_feed_before_start_are_errors() -> None:
    instance = make()
    with pytest.raises(WorkflowStateError):
        instance.feed(Event.PAUSE, 0.0)
    instance.start(0.0)
    with pytest.raises(WorkflowStateError):
        instance.start(0.0)


def test_bad_snapshots_are_refused() -> None:
    data = make().to_dict()
    with pytest.raises(WorkflowStateError):
        WorkflowInstance.from_dict(SPEC, {**data, 'state': 'nowhere'})
    with pytest.raises(WorkflowStateError):
        WorkflowInstance.from_dict(SPEC, {**data, 'workflow': 'other'})
    with pytest.raises(WorkflowStateError):
        WorkflowInstance.from_dict(SPEC, {k: v for k, v in data.items() if k != 'queue'})


_EVENTS = st.sampled_from(list(Event))
_ANSWER = st.booleans()  # True: carry the pending request id; False: a stale/unknown id


def run(instance: WorkflowInstance, script: list[tuple[Event, bool]], start: int) -> list[object]:
    trace: list[object] = []
    for offset, (event, current) in enumerate(script):
        now = float(start + offset)
        if event is Event.POINTS_ADDED:
            instance.add_points([Point(f'extra{start + offset}', now, -now)])
        request_id = instance.pending_request_id if current else 'stale'
        result = instance.feed(event, now, request_id=request_id)
        trace.append((instance.state, result))
    return trace


@settings(max_examples=200, deadline=None)
@given(script=st.lists(st.tuples(_EVENTS, _ANSWER), max_size=40))
def test_same_events_give_same_states_and_requests(script: list[tuple[Event, bool]]) -> None:
    first, second = make(), make()
    assert first.start(0.0) == second.start(0.0)
    assert run(first, script, 1) == run(second, script, 1)
    assert first.to_dict() == second.to_dict()


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.tuples(_EVENTS, _ANSWER), max_size=25),
    after=st.lists(st.tuples(_EVENTS, _ANSWER), max_size=25),
)
def test_snapshot_round_trip_replays_identically(
    before: list[tuple[Event, bool]], after: list[tuple[Event, bool]]
) -> None:
    original = make()
    original.start(0.0)
    run(original, before, 1)
    snapshot = json.loads(json.dumps(original.to_dict()))  # must be JSON-safe
    restored = WorkflowInstance.from_dict(SPEC, snapshot)
    assert restored.to_dict() == original.to_dict()
    assert run(restored, after, 100) == run(original, after, 100)


@settings(max_examples=200, deadline=None)
@given(script=st.lists(st.tuples(_EVENTS, _ANSWER), max_size=40))
def test_at_most_one_step_in_flight_and_each_point_finished_once(script: list[tuple[Event, bool]]) -> None:
    instance = make()
    instance.start(0.0)
    finished: list[str] = []
    for state, result in run(instance, script, 1):  # type: ignore[misc]  # run() returns (state, result) pairs typed as object
        assert isinstance(result, FeedResult)
        assert len([e for e in result.effects if isinstance(e, StepRequest)]) <= 1
        finished += [e.point_id for e in result.effects if isinstance(e, PointFinished)]
        assert state in {s.name for s in SPEC.states}
    assert len(finished) == len(set(finished))
