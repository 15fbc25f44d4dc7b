"""MissionHost (pure): a standby replaying the leader's mission journal takes over at any point of the mission and
finishes it with every point inspected once and no step executed twice."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_core.mission import MissionError, MissionState, MissionStateError
from fleet_core.mission_host import MissionHost, MissionJournalError, MissionOutput
from fleet_core.model import Outcome
from fleet_core.workflow import Point, StepRequest, load_workflow

ROOT = Path(__file__).resolve().parents[3]
SPEC = load_workflow(ROOT / 'config' / 'workflows' / 'inspection.yaml')
AGENTS = [f'r{i}' for i in range(4)]


def workflows(name: str):
    if name != 'inspection':
        raise KeyError(f'unknown workflow {name!r}')
    return SPEC


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def host(clock: Clock, name: str, leading: bool) -> MissionHost:
    h = MissionHost(site_id='site_a', shard_id='zone_1', agents=AGENTS, workflows=workflows, clock=clock, node_id=name)
    if leading:
        h.leading, h.epoch = True, 1
    return h


def points(n: int) -> list[Point]:
    return [Point(f'p{i:02d}', 5 * math.cos(i), 5 * math.sin(i)) for i in range(n)]


class Agents:
    """Agents that apply a command id at most once and answer a repeat with the stored outcome."""

    def __init__(self) -> None:
        self.applied: dict[str, Outcome] = {}
        self.executions: collections.Counter[str] = collections.Counter()
        self.inspected: collections.Counter[str] = collections.Counter()

    def run(self, step: StepRequest) -> Outcome:
        if step.request_id in self.applied:
            return self.applied[step.request_id]
        self.executions[step.request_id] += 1
        if step.kind == 'inspect':
            self.inspected[step.point_id] += 1
        self.applied[step.request_id] = Outcome.SUCCEEDED
        return Outcome.SUCCEEDED


def drive(leader: MissionHost, out: MissionOutput, agents: Agents, followers: list[MissionHost], budget: int) -> int:
    """Run steps through `leader` for at most `budget` outcomes; journal and outcomes reach `followers`."""
    queue = collections.deque(out.requests)
    for entry in out.journal:
        for f in followers:
            f.replay(entry)
    used = 0
    while queue and used < budget:
        step = queue.popleft()
        outcome = agents.run(step)
        for f in followers:
            f.note_outcome(step.request_id, outcome)
        used += 1
        result = leader.on_outcome(step.agent_id, step.request_id, outcome)
        for entry in result.journal:
            for f in followers:
                f.replay(entry)
        queue.extend(result.requests)
    return used


def test_leader_runs_a_mission_to_completion_and_journals_every_input() -> None:
    clock = Clock()
    leader, follower = host(clock, 'L', True), host(clock, 'F', False)
    agents = Agents()
    out = leader.start(mission_id='m1', workflow='inspection', points=points(9))
    drive(leader, out, agents, [follower], 10_000)
    assert leader.mission is not None and leader.mission.state is MissionState.COMPLETED
    assert follower.mission is not None and follower.mission.state is MissionState.COMPLETED
    assert follower.mission.done_by() == leader.mission.done_by()
    assert set(agents.inspected) == {p.point_id for p in points(9)}
    assert max(agents.executions.values()) == 1


@settings(max_examples=40, deadline=None)
@given(kill_after=st.integers(min_value=0, max_value=60), lose_journal=st.integers(min_value=0, max_value=3))
def test_standby_takes_over_at_any_point_without_double_execution(kill_after: int, lose_journal: int) -> None:
    clock = Clock()
    leader, standby = host(clock, 'L', True), host(clock, 'S', False)
    agents = Agents()
    out = leader.start(mission_id='m1', workflow='inspection', points=points(10))
    for entry in out.journal:
        standby.replay(entry)
    queue = collections.deque(out.requests)
    used = 0
    unjournaled: list[str] = []
    # The leader runs; its last `lose_journal` journal entries never reach the standby (killed before sending).
    while queue and used < kill_after:
        step = queue.popleft()
        outcome = agents.run(step)
        standby.note_outcome(step.request_id, outcome)
        used += 1
        result = leader.on_outcome(step.agent_id, step.request_id, outcome)
        unjournaled += result.journal
        queue.extend(result.requests)
        while len(unjournaled) > lose_journal:
            standby.replay(unjournaled.pop(0))
    # Leader killed. Commands it sent but whose outcome never came are adopted by the new dispatcher (queue).
    adopted = {step.request_id: step for step in queue}
    out = standby.promote(epoch=2, dispatcher_pending=lambda cid: cid in adopted)
    # A step regenerated from a seen outcome has the same id (and content) as the adopted copy: the dispatcher
    # keeps one (submit(command_ids=...) skips pending ids).
    for step in out.requests:
        if step.request_id in adopted:
            assert (step.kind, step.args) == (adopted[step.request_id].kind, adopted[step.request_id].args)
    merged = {**adopted, **{step.request_id: step for step in out.requests}}
    resumed = MissionOutput(requests=list(merged.values()), journal=out.journal)
    drive(standby, resumed, agents, [], 10_000)
    assert standby.mission is not None
    assert standby.mission.state is MissionState.COMPLETED, standby.mission.progress()
    assert sorted(standby.mission.done_by()) == sorted(p.point_id for p in points(10))
    assert max(agents.executions.values()) == 1
    assert all(count == 1 for count in agents.inspected.values())


def test_goal_errors_leave_no_mission() -> None:
    clock = Clock()
    leader = host(clock, 'L', True)
    with pytest.raises(MissionError, match='unknown workflow'):
        leader.start(mission_id='m1', workflow='patrol', points=points(3))
    dup = [Point('a', 0, 0), Point('a', 1, 1)]
    with pytest.raises(MissionError, match='listed twice'):
        leader.start(mission_id='m1', workflow='inspection', points=dup)
    assert leader.mission is None and not leader.active


def test_second_mission_refused_while_one_runs_and_cancel_finishes_it() -> None:
    clock = Clock()
    leader = host(clock, 'L', True)
    out = leader.start(mission_id='m1', workflow='inspection', points=points(4))
    with pytest.raises(MissionStateError, match='still RUNNING'):
        leader.start(mission_id='m2', workflow='inspection', points=points(4))
    cancel = leader.cancel('operator')
    assert cancel.journal and json.loads(cancel.journal[0])['op'] == 'cancel'
    drive(leader, MissionOutput(requests=out.requests + cancel.requests), Agents(), [], 1000)
    assert leader.mission is not None and leader.mission.state is MissionState.CANCELLED
    with pytest.raises(MissionStateError, match='no mission is running'):
        leader.cancel('again')


def test_hold_and_release_pause_once_for_several_reasons_and_standby_does_not_act() -> None:
    clock = Clock()
    leader, standby = host(clock, 'L', True), host(clock, 'S', False)
    out = leader.start(mission_id='m1', workflow='inspection', points=points(4))
    for entry in out.journal:
        standby.replay(entry)
    assert [json.loads(j)['op'] for j in leader.hold('estop').journal] == ['pause']
    assert leader.hold('operation').journal == []
    assert leader.release('estop').journal == []
    assert [json.loads(j)['op'] for j in leader.release('operation').journal] == ['resume']
    assert standby.hold('estop').journal == [] and standby.mission is not None
    assert standby.mission.state is MissionState.RUNNING


def test_lost_agent_sync_is_level_triggered_and_journaled() -> None:
    clock = Clock()
    leader, standby = host(clock, 'L', True), host(clock, 'S', False)
    out = leader.start(mission_id='m1', workflow='inspection', points=points(8))
    lost = leader.sync_lost(['r1'])
    assert [json.loads(j)['op'] for j in lost.journal] == ['lost']
    assert leader.sync_lost(['r1']).journal == []
    back = leader.sync_lost([])
    assert [json.loads(j)['op'] for j in back.journal] == ['recovered']
    for entry in out.journal + lost.journal + back.journal:
        standby.replay(entry)
    assert standby.mission is not None and leader.mission is not None
    assert standby.mission.progress() == leader.mission.progress()


def test_journal_gap_and_garbage_are_reported() -> None:
    clock = Clock()
    leader, standby = host(clock, 'L', True), host(clock, 'S', False)
    out = leader.start(mission_id='m1', workflow='inspection', points=points(4))
    standby.replay(out.journal[0])
    leader.hold('estop')
    second = leader.release('estop').journal[0]
    with pytest.raises(MissionJournalError, match='gap'):
        standby.replay(second)
    with pytest.raises(MissionJournalError, match='malformed'):
        standby.replay('{not json')
    # A fenced leader's late entry (older epoch) is ignored, not an error.
    newer = host(clock, 'N', False)
    newer._entry_epoch = 5
    newer.replay(out.journal[0])
    assert newer.mission is None


def test_snapshot_resynchronises_a_late_follower_and_a_former_leader() -> None:
    clock = Clock()
    leader = host(clock, 'L', True)
    agents = Agents()
    out = leader.start(mission_id='m1', workflow='inspection', points=points(8))
    drive(leader, out, agents, [], 7)
    late = host(clock, 'late', False)
    with pytest.raises(MissionJournalError, match='gap'):
        late.replay(leader.hold('x').journal[0])
    late.replay(leader.release('x').journal[0])  # skipped silently while desynced
    late.replay(leader.checkpoint().journal[0])
    assert late.desynced == '' and late.mission is not None and leader.mission is not None
    assert late.mission.progress() == leader.mission.progress()
    # The late follower takes over; the former leader (whose copy may differ) follows its snapshot.
    leader.demote()
    promoted = late.promote(epoch=2, dispatcher_pending=lambda cid: True)
    assert json.loads(promoted.journal[0])['op'] == 'snapshot'
    for entry in promoted.journal:
        leader.replay(entry)
    assert leader.mission.progress() == late.mission.progress()
    assert {a: late.mission.instance(a).to_dict() for a in AGENTS} == {
        a: leader.mission.instance(a).to_dict() for a in AGENTS
    }
