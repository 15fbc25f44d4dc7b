from __future__ import annotations

from fleet_core.mission import MissionState, TaskEventKind, TaskEventRecord
from fleet_core.mission_follow import REJECTED, MissionFollower, is_active, parse_state

A = ('s', 'a')
B = ('s', 'b')


def record(
    key: tuple[str, str] = A,
    event: TaskEventKind = TaskEventKind.POINT_DONE,
    *,
    state: str = 'RUNNING',
    mission: str = 'm1',
    agent: str = '',
    detail: str = '',
    done: int = 0,
    total: int = 4,
) -> TaskEventRecord:
    return TaskEventRecord(
        mission_id=mission,
        workflow='inspection',
        site_id=key[0],
        shard_id=key[1],
        agent_id=agent,
        event=event,
        state=state,
        detail=detail,
        points_done=done,
        points_total=total,
        stamp=0.0,
    )


def test_states_come_from_the_mission_state_enum() -> None:
    assert parse_state('PAUSED') is MissionState.PAUSED
    assert parse_state(REJECTED) is None
    assert [s.value for s in MissionState if is_active(s.value)] == ['RUNNING', 'PAUSED', 'CANCELLING']
    assert not is_active(REJECTED)


def test_follows_every_shard_until_each_has_finished() -> None:
    follower = MissionFollower('m1', [A, B])
    assert not follower.finished()
    assert follower.shards[A].label == 'STARTING'
    follower.on_event(record(A, TaskEventKind.MISSION_STARTED))
    follower.on_status(record(B, event=TaskEventKind.MISSION_STARTED, state='RUNNING', done=1))
    assert follower.shards[A].state is MissionState.RUNNING
    assert follower.shards[B].state is MissionState.RUNNING
    follower.on_event(record(A, TaskEventKind.MISSION_COMPLETED, state='DOCKED', done=4, detail='all points'))
    assert follower.shards[A].finished and not follower.finished()
    follower.on_status(record(B, state='FAILED', done=3, detail='deadline passed'))
    assert follower.finished()
    assert follower.shards[A].detail == 'all points'
    assert follower.shards[B].detail == 'deadline passed'
    assert follower.points() == (7, 8)
    assert follower.shards[A].succeeded and not follower.shards[B].succeeded
    assert not follower.succeeded()


def test_a_final_state_is_never_left_and_progress_never_goes_back() -> None:
    follower = MissionFollower('m1', [A])
    follower.on_status(record(A, state='COMPLETED', done=4))
    follower.on_status(record(A, state='RUNNING', done=2))  # a late status from before the end
    follower.on_event(record(A, TaskEventKind.MISSION_RESUMED, done=2))
    assert follower.shards[A].state is MissionState.COMPLETED
    assert follower.shards[A].points_done == 4
    assert follower.succeeded()


def test_pause_and_resume_events_move_the_state() -> None:
    follower = MissionFollower('m1', [A])
    follower.on_event(record(A, TaskEventKind.MISSION_PAUSED))
    assert follower.shards[A].state is MissionState.PAUSED
    follower.on_event(record(A, TaskEventKind.MISSION_RESUMED))
    assert follower.shards[A].state is MissionState.RUNNING
    follower.on_status(record(A, state='CANCELLING'))
    assert follower.shards[A].state is MissionState.CANCELLING and not follower.finished()


def test_agent_events_are_counted() -> None:
    follower = MissionFollower('m1', [A, B])
    follower.on_event(record(A, TaskEventKind.AGENT_LOST, agent='r1'))
    follower.on_event(record(A, TaskEventKind.AGENT_LOST, agent='r2'))
    follower.on_event(record(A, TaskEventKind.HANDOFF, agent='r1'))
    follower.on_event(record(A, TaskEventKind.AGENT_REJOINED, agent='r2'))
    follower.on_event(record(A, TaskEventKind.AGENT_DONE, agent='r3'))
    follower.on_event(record(B, TaskEventKind.AGENT_DONE, agent='r4'))
    follower.on_event(record(B, TaskEventKind.AGENT_DONE, agent='r4'))
    assert follower.shards[A].lost == {'r1'}
    assert follower.shards[A].handoffs == 1
    assert follower.agents_done() == 2
    assert follower.shards[A].state is None  # agent events say nothing about the mission state


def test_a_refusal_finishes_the_shard_without_a_state() -> None:
    follower = MissionFollower('m1', [A, B])
    follower.on_event(record(A, TaskEventKind.MISSION_FAILED, state=REJECTED, detail='not the leader', total=0))
    assert follower.rejections() == {A: 'not the leader'}
    assert follower.shards[A].state is None and follower.shards[A].label == REJECTED
    assert follower.shards[A].finished and not follower.finished()


def test_other_missions_and_shards_are_ignored() -> None:
    follower = MissionFollower('m1', [A])
    follower.on_status(record(A, state='COMPLETED', mission='m0', done=4))
    follower.on_event(record(('s', 'zz'), TaskEventKind.MISSION_COMPLETED))
    follower.on_event(record(A, TaskEventKind.MISSION_FAILED, state=REJECTED, mission='m0'))
    assert follower.shards[A].state is None
    assert follower.shards[A].points_done == 0
    assert follower.rejections() == {}
    assert list(follower.shards) == [A]
