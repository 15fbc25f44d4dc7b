"""MissionDriver: runs the inspection as one RunMission goal per shard (/fleet/<site>/<shard>/mission) and follows
it through the latched mission status and the task events, which survive a leader failover (the new leader resumes
the journaled mission; only the dead leader's goal handle is lost)."""

from __future__ import annotations

from dataclasses import dataclass

from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.task import Future

from fleet_core import topics
from fleet_core.config import FleetConfig
from fleet_core.mission import TaskEventKind
from fleet_interfaces.action import RunMission
from fleet_interfaces.msg import TaskEvent
from fleet_ros import qos

FINISHED_STATES = ('COMPLETED', 'FAILED', 'CANCELLED')


def mission_status_topic(site: str, shard: str) -> str:
    return f'{topics.shard_prefix(site, shard)}/mission_status'


@dataclass(slots=True)
class _ShardMission:
    points: list[tuple[str, float, float]]
    client: ActionClient
    goal: Future | None = None
    state: str = 'PENDING'
    points_done: int = 0
    detail: str = ''


class MissionDriver:
    """`points[(site, shard)]` are that shard's inspection points; the orchestrator splits them among its agents."""

    def __init__(
        self,
        node: Node,
        fleet: FleetConfig,
        points: dict[tuple[str, str], list[tuple[str, float, float]]],
        mission_id: str,
    ) -> None:
        self.mission_id = mission_id
        self.shards = {
            key: _ShardMission(pts, ActionClient(node, RunMission, topics.shard_mission(*key)))
            for key, pts in points.items()
        }
        self.agents_done: set[str] = set()
        self.agents = fleet.agent_count
        for site, shard in self.shards:
            node.create_subscription(TaskEvent, mission_status_topic(site, shard), self._on_status, qos.LATCHED)
            node.create_subscription(TaskEvent, topics.shard_task_events(site, shard), self._on_event, qos.EVENTS)

    def servers_ready(self) -> bool:
        return all(s.client.server_is_ready() for s in self.shards.values())

    def start(self) -> None:
        for shard in self.shards.values():
            goal = RunMission.Goal(
                mission_id=self.mission_id,
                workflow='inspection',
                point_ids=[p[0] for p in shard.points],
                point_xy=[c for p in shard.points for c in (p[1], p[2])],
            )
            shard.goal = shard.client.send_goal_async(goal)

    def refused(self) -> list[str]:
        out = []
        for (site, shard), mission in self.shards.items():
            goal = mission.goal
            if goal is not None and goal.done() and (goal.result() is None or not goal.result().accepted):
                out.append(f'{site}/{shard}: {mission.detail or "goal rejected"}')
        return out

    def _on_status(self, msg: TaskEvent) -> None:
        mission = self.shards.get((msg.site_id, msg.shard_id))
        if mission is None or msg.mission_id != self.mission_id:
            return
        mission.state, mission.points_done, mission.detail = msg.state, msg.points_done, msg.detail

    def _on_event(self, msg: TaskEvent) -> None:
        if msg.mission_id == self.mission_id and msg.event == TaskEventKind.AGENT_DONE:
            self.agents_done.add(msg.agent_id)

    # -- the same views as StepDriver --------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return bool(self.refused()) or all(s.state in FINISHED_STATES for s in self.shards.values())

    @property
    def succeeded(self) -> bool:
        return all(s.state == 'COMPLETED' and s.points_done == len(s.points) for s in self.shards.values())

    def tick(self) -> None:
        """Nothing to do periodically: the orchestrators run the workflow."""

    def points(self) -> tuple[int, int]:
        return sum(s.points_done for s in self.shards.values()), sum(len(s.points) for s in self.shards.values())

    def robots_done(self) -> int:
        return len(self.agents_done)

    def robots_failed(self) -> int:
        return 0 if self.succeeded or not self.finished else self.agents - len(self.agents_done)

    def states(self) -> str:
        return ' '.join(f'{site}/{shard}:{m.state}' for (site, shard), m in self.shards.items())
