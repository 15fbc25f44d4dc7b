"""The ROS side of a shard's mission: the RunMission action and mission_cancel service (leader only), TaskEvents,
the latched mission status, and the mission journal that standbys replay (fleet_core.mission_host). What the mission
does is decided by fleet_core.shard_leader."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.node import Node
from rclpy.service import Service
from rclpy.task import Future
from std_msgs.msg import String
from std_srvs.srv import Trigger

from fleet_core import topics
from fleet_core.mission import MissionError, MissionProgress, MissionStateError, TaskEventKind, points_from_goal
from fleet_core.mission_host import NoMission
from fleet_core.shard_effects import Effects
from fleet_core.shard_leader import ShardLeader
from fleet_core.workflow import WorkflowError, WorkflowSpec, load_workflow
from fleet_interfaces.action import RunMission
from fleet_interfaces.msg import TaskEvent
from fleet_ros import qos
from fleet_ros.convert import to_time


class WorkflowLibrary:
    """Every workflow YAML of a directory, validated at configure; a broken file is reported, not fatal."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.specs: dict[str, WorkflowSpec] = {}
        self.errors: dict[str, str] = {}
        for path in sorted(directory.glob('*.yaml')) if directory.is_dir() else []:
            try:
                spec = load_workflow(path)
            except (WorkflowError, OSError) as exc:
                self.errors[path.stem] = str(exc)
                continue
            self.specs[spec.name] = spec

    def __call__(self, name: str) -> WorkflowSpec:
        if name in self.specs:
            return self.specs[name]
        if name in self.errors:
            raise KeyError(f'workflow {name!r} is invalid: {self.errors[name]}')
        raise KeyError(
            f'unknown workflow {name!r} (known: {", ".join(sorted(self.specs)) or "none"} in {self.directory})'
        )


class MissionServer:
    """The ROS endpoints of the shard's mission; the decisions are the ShardLeader's, whose Effects go to `apply`.
    Every method runs on the node's executor thread."""

    def __init__(self, node: Node, leader: ShardLeader, apply: Callable[[Effects], None]) -> None:
        self.node = node
        self.leader = leader
        self.host = leader.missions
        self._apply = apply
        site, shard = leader.site_id, leader.shard_id
        self.site_id, self.shard_id = site, shard
        self.events_pub = node.create_publisher(TaskEvent, topics.shard_task_events(site, shard), qos.EVENTS)
        self.status_pub = node.create_publisher(TaskEvent, topics.shard_mission_status(site, shard), qos.LATCHED)
        self.journal_pub = node.create_publisher(String, topics.shard_mission_journal(site, shard), qos.EVENTS)
        node.create_subscription(String, topics.shard_mission_journal(site, shard), self._on_journal, qos.EVENTS)
        # Latched: a hand-over published before the new leader discovered this replica still reaches it.
        handoff = topics.shard_mission_handoff(site, shard)
        self.handoff_pub = node.create_publisher(String, handoff, qos.LATCHED)
        node.create_subscription(String, handoff, self._on_handoff, qos.LATCHED)
        self._action: ActionServer | None = None
        self._cancel_srv: Service | None = None
        self._retired: list[ActionServer] = []
        self._goal: tuple[ServerGoalHandle, Future] | None = None
        self._status_dirty = False
        self._journal_readers = 0
        self._log = node.get_logger()

    # -- leadership --------------------------------------------------------------------------------------

    def open(self) -> None:
        """This replica leads (its mission copy resumed by ShardLeader.resume): open the action and cancel service."""
        site, shard = self.site_id, self.shard_id
        self._action = ActionServer(
            self.node,
            RunMission,
            topics.shard_mission(site, shard),
            execute_callback=self._execute,
            goal_callback=self._on_goal,
            cancel_callback=self._on_cancel,
        )
        self._cancel_srv = self.node.create_service(
            Trigger, topics.shard_mission_cancel(site, shard), self._on_cancel_srv
        )

    def close(self) -> None:
        """Stepped down: the running goal is aborted (the mission continues under the new leader)."""
        if self._goal is not None:
            handle, future = self._goal
            self._goal = None
            if handle.is_active:
                handle.abort()
            if not future.done():
                future.set_result(('abort', 'leader stepped down; the mission continues under the new leader'))
        if self._action is not None:
            # Destroyed at the next tick, outside the callback that made us step down.
            self._retired.append(self._action)
            self._action = None
        if self._cancel_srv is not None:
            self.node.destroy_service(self._cancel_srv)
            self._cancel_srv = None

    def tick(self) -> None:
        while self._retired:
            self._retired.pop().destroy()

    def snapshot_for_new_readers(self) -> None:
        """A new reader of the mission journal (ours is one): a standby that joined gets the running mission now."""
        readers = self.journal_pub.get_subscription_count()
        joined, self._journal_readers = readers > self._journal_readers, readers
        if joined:
            self._apply(self.leader.mission_reader_joined())

    def hand_over(self) -> None:
        """This replica handed its journal to a new leader: its running mission goes with it (when it has one)."""
        entry = self.leader.mission_handoff()
        if entry:
            self.handoff_pub.publish(String(data=entry))
            self._log.info('handed the running mission over to the new leader')

    def _on_handoff(self, msg: String) -> None:
        self._apply(self.leader.adopt_mission(msg.data))

    # -- effects -----------------------------------------------------------------------------------------

    def publish_journal(self, entries: list[str]) -> None:
        """The mission journal goes out before the steps it decided (standbys never lag behind the agents)."""
        for entry in entries:
            self.journal_pub.publish(String(data=entry))

    def publish_events(self, effects: Effects) -> None:
        for record in effects.task_events:
            self.events_pub.publish(
                TaskEvent(
                    mission_id=record.mission_id,
                    workflow=record.workflow,
                    site_id=record.site_id,
                    shard_id=record.shard_id,
                    agent_id=record.agent_id,
                    event=int(record.event),
                    state=record.state,
                    detail=record.detail[:400],
                    points_done=record.points_done,
                    points_total=record.points_total,
                    stamp=to_time(record.stamp),
                )
            )
        if effects.mission_changed:
            self._status_dirty = True
            self._feedback()
        if effects.mission_finished:
            self.publish_status(force=True)
            self._finish_goal()

    def publish_status(self, force: bool = False) -> None:
        progress = self.host.progress()
        if progress is None or not (self._status_dirty or force):
            return
        self._status_dirty = False
        if self.host.mission is None:
            raise NoMission
        mission = self.host.mission
        kind = {
            'COMPLETED': TaskEventKind.MISSION_COMPLETED,
            'FAILED': TaskEventKind.MISSION_FAILED,
            'CANCELLED': TaskEventKind.MISSION_CANCELLED,
            'PAUSED': TaskEventKind.MISSION_PAUSED,
        }.get(progress.state.value, TaskEventKind.MISSION_STARTED)
        self.status_pub.publish(
            TaskEvent(
                mission_id=mission.mission_id,
                workflow=mission.spec.name,
                site_id=self.site_id,
                shard_id=self.shard_id,
                agent_id='',
                event=int(kind),
                state=progress.state.value,
                detail=_summary(progress),
                points_done=progress.points_done,
                points_total=progress.points_total,
                stamp=to_time(self.leader.clock()),
            )
        )

    def _feedback(self) -> None:
        if self._goal is None:
            return
        progress = self.host.progress()
        if progress is None:
            return
        self._goal[0].publish_feedback(
            RunMission.Feedback(
                points_done=progress.points_done,
                points_total=progress.points_total,
                agents_active=progress.agents_active,
                agents_lost=progress.agents_lost,
                handoffs=progress.handoffs,
                state=progress.state.value,
            )
        )

    def _finish_goal(self) -> None:
        if self._goal is None:
            return
        _handle, future = self._goal
        if not future.done():
            future.set_result(('done', ''))

    # -- action and service callbacks --------------------------------------------------------------------

    def _on_goal(self, goal: RunMission.Goal) -> GoalResponse:
        mission_id = goal.mission_id or str(uuid.uuid4())
        goal.mission_id = mission_id
        try:
            points = points_from_goal(list(goal.point_ids), list(goal.point_xy))
            effects = self.leader.start_mission(mission_id=mission_id, workflow=goal.workflow, points=points)
        except (MissionError, MissionStateError) as exc:
            self._log.error(f'mission {mission_id} ({goal.workflow}) rejected: {exc}')
            self._publish_rejection(mission_id, goal.workflow, str(exc))
            return GoalResponse.REJECT
        self._apply(effects)
        self.publish_status(force=True)
        return GoalResponse.ACCEPT

    def _publish_rejection(self, mission_id: str, workflow: str, reason: str) -> None:
        self.events_pub.publish(
            TaskEvent(
                mission_id=mission_id,
                workflow=workflow,
                site_id=self.site_id,
                shard_id=self.shard_id,
                event=int(TaskEventKind.MISSION_FAILED),
                state='REJECTED',
                detail=reason[:400],
                stamp=to_time(self.leader.clock()),
            )
        )

    async def _execute(self, handle: ServerGoalHandle) -> RunMission.Result:
        future: Future = Future()
        self._goal = (handle, future)
        if not self.host.active:
            self._finish_goal()
        self._feedback()
        verdict, detail = await future
        progress = self.host.progress()
        result = RunMission.Result()
        if progress is not None:
            result.success = progress.success
            result.points_done = progress.points_done
            result.points_total = progress.points_total
            result.handoffs = progress.handoffs
            result.detail = (detail or progress.detail)[:400]
        if self._goal is not None and self._goal[0] is handle:
            self._goal = None
        if verdict == 'abort':
            result.success = False  # aborted by step_down already
        elif handle.is_cancel_requested:
            handle.canceled()
        elif result.success:
            handle.succeed()
        else:
            handle.abort()
        return result

    def _on_cancel(self, _handle: ServerGoalHandle) -> CancelResponse:
        try:
            self._apply(self.leader.cancel_mission('cancelled by operator (action cancel)'))
        except MissionStateError:
            return CancelResponse.REJECT
        return CancelResponse.ACCEPT

    def _on_cancel_srv(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            self._apply(self.leader.cancel_mission('cancelled by operator'))
        except MissionStateError as exc:
            response.success = False
            response.message = str(exc)
            return response
        if self.host.mission is None:
            raise NoMission
        response.success = True
        response.message = f'mission {self.host.mission.mission_id} cancelling: agents return home and dock'
        return response

    def _on_journal(self, msg: String) -> None:
        self._apply(self.leader.replay_mission(msg.data))


def _summary(progress: MissionProgress) -> str:
    parts = [
        f'agents_active={progress.agents_active}',
        f'agents_lost={progress.agents_lost}',
        f'handoffs={progress.handoffs}',
    ]
    if progress.detail:
        parts.append(progress.detail)
    return '; '.join(parts)[:400]
