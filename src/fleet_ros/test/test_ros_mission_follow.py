from __future__ import annotations

from builtin_interfaces.msg import Time

from fleet_core.mission import TaskEventKind
from fleet_interfaces.msg import TaskEvent
from fleet_ros.mission_follow import task_event_from_msg


def test_task_event_becomes_a_record_field_for_field() -> None:
    msg = TaskEvent(
        mission_id='m1',
        workflow='inspection',
        site_id='s',
        shard_id='a',
        agent_id='r1',
        event=TaskEvent.EVENT_HANDOFF,
        state='NAVIGATING',
        detail='p1 -> r2',
        points_done=3,
        points_total=9,
        stamp=Time(sec=12, nanosec=500_000_000),
    )
    record = task_event_from_msg(msg)
    assert record is not None
    assert record.event is TaskEventKind.HANDOFF
    assert (record.mission_id, record.workflow, record.site_id, record.shard_id, record.agent_id) == (
        'm1',
        'inspection',
        's',
        'a',
        'r1',
    )
    assert (record.state, record.detail, record.points_done, record.points_total) == ('NAVIGATING', 'p1 -> r2', 3, 9)
    assert record.stamp == 12.5


def test_unknown_event_kinds_are_dropped() -> None:
    assert task_event_from_msg(TaskEvent(event=200)) is None
