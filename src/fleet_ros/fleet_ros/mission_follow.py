"""The ROS side of fleet_core.mission_follow: subscribes a node to the task events and latched mission status of
the followed shards and feeds a MissionFollower (fleetctl mission and the demo share it)."""

from __future__ import annotations

from rclpy.node import Node
from rclpy.subscription import Subscription

from fleet_core import topics
from fleet_core.mission import TaskEventKind, TaskEventRecord
from fleet_core.mission_follow import MissionFollower
from fleet_interfaces.msg import TaskEvent
from fleet_ros import qos
from fleet_ros.convert import from_time


def task_event_from_msg(msg: TaskEvent) -> TaskEventRecord | None:
    """None for an event kind this build does not know (a newer orchestrator)."""
    try:
        kind = TaskEventKind(msg.event)
    except ValueError:
        return None
    return TaskEventRecord(
        mission_id=msg.mission_id,
        workflow=msg.workflow,
        site_id=msg.site_id,
        shard_id=msg.shard_id,
        agent_id=msg.agent_id,
        event=kind,
        state=msg.state,
        detail=msg.detail,
        points_done=msg.points_done,
        points_total=msg.points_total,
        stamp=from_time(msg.stamp),
    )


def follow_mission(node: Node, follower: MissionFollower) -> list[Subscription]:
    """Subscriptions feeding `follower` from every shard it follows; destroy them through the node when done."""

    def on_event(msg: TaskEvent) -> None:
        record = task_event_from_msg(msg)
        if record is not None:
            follower.on_event(record)

    def on_status(msg: TaskEvent) -> None:
        record = task_event_from_msg(msg)
        if record is not None:
            follower.on_status(record)

    subscriptions: list[Subscription] = []
    for site, shard in follower.shards:
        subscriptions.append(
            node.create_subscription(TaskEvent, topics.shard_task_events(site, shard), on_event, qos.EVENTS)
        )
        subscriptions.append(
            node.create_subscription(TaskEvent, topics.shard_mission_status(site, shard), on_status, qos.LATCHED)
        )
    return subscriptions
