"""Tests for fleet_core.mission: point split, handoff on loss, rejoin, cancel/pause, and exactly-once inspection."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_core.mission import (
    InspectionMission,
    MissionError,
    MissionState,
    MissionStateError,
    TaskEventKind,
    points_from_goal,
    split_points,
)
from fleet_core.model import Outcome
from fleet_core.workflow import Point, StepRequest, load_workflow

SPEC = load_workflow(Path(__file__).resolve().parents[3] / 'config' / 'workflows' / 'inspection.yaml')


def ring(count: int) -> list[Point]:
    return [Point(f'p{i:03d}', 10 * math.cos(i), 10 * math.sin(i)) for i in range(count)]


class Fleet:
    """A scripted shard: remembers each agent's latest request and answers on demand."""

    def __init__(self, agents: int, points: int, **kwargs: object) -> None:
        self.now = 0.0
        self.mission = InspectionMission(
            SPEC,
            mission_id='m1',
            site_id='site_a',
            shard_id='zone_1',
            agent_ids=[f'r{i}' for i in range(agents)],
            points=ring(points),
            clock=lambda: self.now,
            **kwargs,  # type: ignore[arg-type]  # keyword overrides of the test fleet
        )
        self.inflight: dict[str, StepRequest] = {}
        self.history: list[StepRequest] = []
        self.events: list[object] = []

    def pump(self) -> None:
        for request in self.mission.next_requests():
            self.inflight[request.agent_id] = request
            self.history.append(request)
        self.events += self.mission.take_events()

    def answer(self, agent: str, outcome: Outcome = Outcome.SUCCEEDED) -> bool:
        request = self.inflight.pop(agent, None)
        if request is None:
            return False
        handled = self.mission.on_outcome(agent, request.request_id, outcome)
        self.pump()
        return handled

    def run(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            if self.mission.state.finished:
                return
            live = [a for a in sorted(self.inflight) if a not in self.mission._lost]
            if not live:
                return
            self.answer(live[0])
        raise AssertionError('mission did not settle')

    def kinds(self, agent: str) -> list[str]:
        return [f'{r.kind}:{r.point_id}' for r in self.history if r.agent_id == agent]


def test_split_is_balanced_deterministic_and_contiguous() -> None:
    points = ring(23)
    split = split_points(points, ['c', 'a', 'b'])
    assert [len(v) for v in split.values()] == [8, 8, 7]
    assert list(split) == ['a', 'b', 'c']
    assert sorted(p.point_id for chunk in split.values() for p in chunk) == sorted(p.point_id for p in points)
    assert split == split_points(list(reversed(points)), ['b', 'c', 'a'])
    # Each chunk is a contiguous angular sector around the centroid.
    for chunk in split.values():
        angles = [math.atan2(p.y, p.x) for p in chunk]
        assert angles == sorted(angles)
    assert split_points([], ['a']) == {'a': []}


def test_points_from_goal_pairs_coordinates() -> None:
    assert points_from_goal(['a', 'b'], [1.0, 2.0, 3.0, 4.0]) == [Point('a', 1, 2), Point('b', 3, 4)]
    with pytest.raises(MissionError, match='point_xy has 3 numbers'):
        points_from_goal(['a', 'b'], [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    ('agents', 'points', 'match'),
    [
        ([], ring(2), 'no agents'),
        (['a', 'a'], ring(2), 'twice'),
        (['a'], [Point('x', 0, 0), Point('x', 1, 1)], "'x' is listed twice"),
        (['a'], [Point('x', math.nan, 0)], 'non-finite'),
    ],
)
def test_bad_missions_are_refused(agents: list[str], points: list[Point], match: str) -> None:
    with pytest.raises(MissionError, match=match):
        InspectionMission(SPEC, mission_id='m', site_id='s', shard_id='z', agent_ids=agents, points=points, clock=float)


def test_unknown_home_is_refused() -> None:
    with pytest.raises(MissionError, match='homes given'):
        InspectionMission(
            SPEC,
            mission_id='m',
            site_id='s',
            shard_id='z',
            agent_ids=['a'],
            points=[],
            clock=float,
            homes={'b': (0.0, 0.0)},
        )


def test_happy_mission_completes_with_every_point_once() -> None:
    fleet = Fleet(3, 10)
    fleet.mission.start()
    fleet.pump()
    fleet.run()
    progress = fleet.mission.progress()
    assert progress.state is MissionState.COMPLETED
    assert progress.success
    assert (progress.points_done, progress.points_total, progress.handoffs) == (10, 10, 0)
    assert sorted(fleet.mission.done_by()) == [f'p{i:03d}' for i in range(10)]
    kinds = [e.event for e in fleet.events]  # type: ignore[attr-defined]  # Fleet.events holds TaskEvent objects typed as object
    assert kinds[0] is TaskEventKind.MISSION_STARTED and kinds[-1] is TaskEventKind.MISSION_COMPLETED
    assert kinds.count(TaskEventKind.POINT_DONE) == 10
    assert kinds.count(TaskEventKind.AGENT_DONE) == 3
    for agent in fleet.mission.agents:
        assert fleet.kinds(agent)[0] == 'undock:' and fleet.kinds(agent)[-1] == 'dock:'


def test_lost_agent_points_are_finished_by_others() -> None:
    fleet = Fleet(3, 12)
    fleet.mission.start()
    fleet.pump()
    for agent in ('r0', 'r0', 'r0'):  # r0: undock, goto p, inspect p -> report pending
        fleet.answer(agent)
    in_progress = fleet.mission.instance('r0').current_point
    assert in_progress is not None
    stale = fleet.inflight['r0']
    assert fleet.mission.on_agent_lost('r0')
    fleet.pump()
    assert stale.request_id in fleet.mission.take_cancellations()
    assert fleet.mission.instance('r0').load == 0
    # The lost agent's late answer is ignored: it no longer owns the point.
    assert not fleet.mission.on_outcome('r0', stale.request_id, Outcome.SUCCEEDED)
    fleet.run()
    progress = fleet.mission.progress()
    assert progress.state is MissionState.COMPLETED
    assert progress.points_done == 12 and progress.handoffs == 4
    assert not progress.success and 'agents lost: r0' in progress.detail
    assert fleet.mission.done_by()[in_progress.point_id] in {'r1', 'r2'}
    handoffs = [e for e in fleet.events if e.event is TaskEventKind.HANDOFF]  # type: ignore[attr-defined]  # Fleet.events holds TaskEvent objects typed as object
    assert {e.agent_id for e in handoffs} == {'r1', 'r2'}  # type: ignore[attr-defined]  # Fleet.events holds TaskEvent objects typed as object


def test_recovered_agent_takes_a_share_of_queued_points() -> None:
    fleet = Fleet(2, 20)
    fleet.mission.start()
    fleet.pump()
    fleet.mission.on_agent_lost('r1')
    fleet.pump()
    assert fleet.mission.instance('r0').load == 20
    fleet.mission.on_agent_recovered('r1')
    fleet.pump()
    loads = (fleet.mission.instance('r0').load, fleet.mission.instance('r1').load)
    assert abs(loads[0] - loads[1]) <= 1 and sum(loads) == 20
    assert fleet.inflight['r1'].kind == 'undock'
    fleet.run()
    assert fleet.mission.progress().success


def test_all_agents_lost_keeps_points_in_pool_until_one_recovers() -> None:
    fleet = Fleet(2, 4)
    fleet.mission.start()
    fleet.pump()
    fleet.mission.on_agent_lost('r0')
    fleet.mission.on_agent_lost('r1')
    fleet.pump()
    assert fleet.mission.state is MissionState.RUNNING
    assert fleet.mission.progress().agents_lost == 2
    fleet.mission.on_agent_recovered('r1')
    fleet.pump()
    assert fleet.mission.instance('r1').load == 4
    fleet.run()
    progress = fleet.mission.progress()
    assert progress.state is MissionState.COMPLETED and progress.points_done == 4
    assert set(fleet.mission.done_by().values()) == {'r1'}


def test_recovered_agent_with_nothing_left_goes_home_and_docks() -> None:
    fleet = Fleet(2, 2)
    fleet.mission.start()
    fleet.pump()
    fleet.answer('r0')
    fleet.mission.on_agent_lost('r0')
    fleet.pump()
    fleet.run()
    assert fleet.mission.state is MissionState.COMPLETED
    fleet.mission.on_agent_recovered('r0')
    fleet.pump()
    assert fleet.kinds('r0')[-1] == 'goto:'
    fleet.answer('r0')
    assert fleet.kinds('r0')[-1] == 'dock:'


def test_failed_agent_hands_its_points_off() -> None:
    fleet = Fleet(2, 6)
    fleet.mission.start()
    fleet.pump()
    for _ in range(SPEC.max_retries + 1):
        fleet.answer('r0', Outcome.REJECTED)
    assert fleet.mission.instance('r0').result == 'failed'
    assert fleet.mission.instance('r1').load == 6
    fleet.run()
    progress = fleet.mission.progress()
    assert progress.points_done == 6 and not progress.success and 'agents failed: r0' in progress.detail


def test_every_agent_failing_fails_the_mission() -> None:
    fleet = Fleet(1, 3)
    fleet.mission.start()
    fleet.pump()
    for _ in range(SPEC.max_retries + 1):
        fleet.answer('r0', Outcome.FAILED)
    progress = fleet.mission.progress()
    assert progress.state is MissionState.FAILED
    assert progress.points_undone == ('p000', 'p001', 'p002')


def test_cancel_sends_everyone_home_and_reports_undone_points() -> None:
    fleet = Fleet(2, 6)
    fleet.mission.start()
    fleet.pump()
    fleet.answer('r0')
    fleet.answer('r1')
    fleet.mission.pause()
    fleet.answer('r0')  # goto finished; inspect is held
    assert 'r0' not in fleet.inflight
    fleet.mission.cancel('operator said so')
    fleet.pump()
    assert fleet.inflight['r0'].args['point_id'] == 'home'
    with pytest.raises(MissionStateError):
        fleet.mission.cancel()
    fleet.run()
    progress = fleet.mission.progress()
    assert progress.state is MissionState.CANCELLED
    assert progress.points_done == 0 and len(progress.points_undone) == 6
    assert progress.detail == 'operator said so'
    assert all(fleet.kinds(a)[-1] == 'dock:' for a in ('r0', 'r1'))


def test_pause_and_resume_are_checked() -> None:
    fleet = Fleet(1, 1)
    fleet.mission.start()
    fleet.pump()
    with pytest.raises(MissionStateError, match='only a PAUSED mission resumes'):
        fleet.mission.resume()
    fleet.mission.pause()
    with pytest.raises(MissionStateError):
        fleet.mission.pause()
    fleet.answer('r0')
    assert 'r0' not in fleet.inflight
    fleet.mission.resume()
    fleet.pump()
    assert fleet.inflight['r0'].kind == 'goto'
    with pytest.raises(MissionStateError):
        fleet.mission.start()


def test_step_timeout_and_mission_deadline() -> None:
    fleet = Fleet(1, 2, deadline=500.0)
    fleet.mission.start()
    fleet.pump()
    first = fleet.inflight['r0']
    fleet.mission.tick(first.issued_at + 59.0)
    assert fleet.mission.take_cancellations() == []
    fleet.now = 61.0
    fleet.mission.tick(61.0)
    fleet.pump()
    assert fleet.mission.take_cancellations() == [first.request_id]
    assert fleet.inflight['r0'].kind == 'undock' and fleet.inflight['r0'].request_id != first.request_id
    fleet.now = 500.0
    fleet.mission.tick(500.0)
    fleet.pump()
    progress = fleet.mission.progress()
    assert progress.state is MissionState.FAILED and 'deadline' in progress.detail
    assert fleet.inflight['r0'].kind == 'undock'  # the agent still finishes the step it is on, then heads home


_OPS = st.one_of(
    st.tuples(st.just('answer'), st.integers(0, 4), st.sampled_from([Outcome.SUCCEEDED] * 6 + list(Outcome))),
    st.tuples(st.just('lost'), st.integers(0, 4), st.none()),
    st.tuples(st.just('recover'), st.integers(0, 4), st.none()),
    st.tuples(st.just('stale'), st.integers(0, 4), st.none()),
    st.tuples(st.just('tick'), st.integers(1, 90), st.none()),
    st.tuples(st.just('pause'), st.just(0), st.none()),
    st.tuples(st.just('resume'), st.just(0), st.none()),
)


def check_ownership(fleet: Fleet) -> None:
    mission = fleet.mission
    owners: dict[str, str] = {}
    for agent in mission.agents:
        instance = mission.instance(agent)
        held = list(instance.queued_points) + ([instance.current_point] if instance.current_point else [])
        for point in held:
            assert point.point_id not in owners, f'{point.point_id} held by {owners.get(point.point_id)} and {agent}'
            assert point.point_id not in mission.done_by(), f'{point.point_id} done yet still queued'
            owners[point.point_id] = agent
        if agent in mission._lost:
            assert not held, 'a lost agent keeps no points'


@settings(max_examples=120, deadline=None)
@given(agents=st.integers(1, 5), points=st.integers(0, 14), ops=st.lists(_OPS, max_size=60))
def test_every_point_inspected_exactly_once_under_loss_and_recovery(
    agents: int, points: int, ops: list[tuple[str, int, Outcome | None]]
) -> None:
    fleet = Fleet(agents, points)
    fleet.mission.start()
    fleet.pump()
    names = list(fleet.mission.agents)
    for op, index, outcome in ops:
        agent = names[index % len(names)]
        if op == 'answer' and outcome is not None:
            request = fleet.inflight.get(agent)
            handled = fleet.answer(agent, outcome)
            if request is not None and agent in fleet.mission._lost:
                assert not handled, 'an outcome from a lost agent must not move its workflow'
        elif op == 'lost':
            fleet.mission.on_agent_lost(agent)
        elif op == 'recover':
            fleet.mission.on_agent_recovered(agent)
        elif op == 'stale' and fleet.history:
            old = fleet.history[index % len(fleet.history)]
            if old.request_id != fleet.mission.instance(old.agent_id).pending_request_id:
                assert not fleet.mission.on_outcome(old.agent_id, old.request_id, Outcome.SUCCEEDED)
        elif op == 'tick':
            fleet.now += index
            fleet.mission.tick(fleet.now)
        elif op == 'pause' and fleet.mission.state is MissionState.RUNNING:
            fleet.mission.pause()
        elif op == 'resume' and fleet.mission.state is MissionState.PAUSED:
            fleet.mission.resume()
        fleet.pump()
        check_ownership(fleet)
    # Let the fleet heal and drain: every agent back, mission resumed, every step answered with success.
    for agent in names:
        fleet.mission.on_agent_recovered(agent)
    if fleet.mission.state is MissionState.PAUSED:
        fleet.mission.resume()
    fleet.pump()
    fleet.run()
    check_ownership(fleet)
    progress = fleet.mission.progress()
    assert progress.state in (MissionState.COMPLETED, MissionState.FAILED)
    done = fleet.mission.done_by()
    everything = {f'p{i:03d}' for i in range(points)}
    assert set(done) | set(progress.points_undone) == everything
    assert not set(done) & set(progress.points_undone)
    if progress.state is MissionState.FAILED:
        assert progress.points_undone, 'a failed mission names the points it left undone'
    # Credit matches the one report that finished each point, and no point was reported done twice.
    reports = [e for e in fleet.events if e.event is TaskEventKind.POINT_DONE]  # type: ignore[attr-defined]  # Fleet.events holds TaskEvent objects typed as object
    assert sorted(e.detail for e in reports) == sorted(done)  # type: ignore[attr-defined]  # Fleet.events holds TaskEvent objects typed as object
    assert all(done[e.detail] == e.agent_id for e in reports)  # type: ignore[attr-defined]  # Fleet.events holds TaskEvent objects typed as object
    # A report request for a point only ever went out while that agent owned it: never two agents at once.
    assert progress.points_done == len(done)
    assert not any(fleet.mission.instance(a).load for a in names)


def test_snapshot_round_trip_continues_identically() -> None:
    from fleet_core.mission import mission_from_dict, mission_to_dict

    fleet = Fleet(agents=3, points=7)
    fleet.mission.start()
    fleet.pump()
    for _ in range(5):
        fleet.answer(sorted(fleet.inflight)[0])
    fleet.mission.on_agent_lost('r1')
    fleet.pump()
    copy = mission_from_dict(SPEC, mission_to_dict(fleet.mission), clock=lambda: fleet.now)
    assert copy.progress() == fleet.mission.progress()
    assert mission_to_dict(copy) == mission_to_dict(fleet.mission)
    for agent, request in sorted(fleet.inflight.items()):
        if agent == 'r1':
            continue
        assert copy.on_outcome(agent, request.request_id, Outcome.SUCCEEDED)
        assert fleet.answer(agent)
        assert [r.request_id for r in copy.next_requests()] == [fleet.inflight[agent].request_id]
    with pytest.raises(MissionError, match='malformed'):
        mission_from_dict(SPEC, {'workflow': 'inspection'}, clock=lambda: 0.0)
