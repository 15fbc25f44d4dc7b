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
from fleet_core.mission_follow import MissionFollower
from fleet_interfaces.action import RunMission
from fleet_ros.mission_follow import follow_mission


@dataclass(slots=True)
class _ShardGoal:
    points: list[tuple[str, float, float]]
    client: ActionClient
    goal: Future | None = None


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
            key: _ShardGoal(pts, ActionClient(node, RunMission, topics.shard_mission(*key)))
            for key, pts in points.items()
        }
        self.follower = MissionFollower(mission_id, self.shards)
        self.agents = fleet.agent_count
        follow_mission(node, self.follower)

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
        for key, shard in self.shards.items():
            goal = shard.goal
            if goal is not None and goal.done() and (goal.result() is None or not goal.result().accepted):
                reason = self.follower.shards[key].rejection or 'goal rejected'
                out.append(f'{key[0]}/{key[1]}: {reason}')
        return out

    # -- the same views as StepDriver --------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return bool(self.refused()) or self.follower.finished()

    @property
    def succeeded(self) -> bool:
        """Every shard completed every point it was sent (not only the points it reported)."""
        return all(
            self.follower.shards[key].succeeded and self.follower.shards[key].points_done == len(shard.points)
            for key, shard in self.shards.items()
        )

    def tick(self) -> None:
        """Nothing to do periodically: the orchestrators run the workflow."""

    def points(self) -> tuple[int, int]:
        return self.follower.points()[0], sum(len(s.points) for s in self.shards.values())

    def robots_done(self) -> int:
        return self.follower.agents_done()

    def robots_failed(self) -> int:
        return 0 if self.succeeded or not self.finished else self.agents - self.robots_done()

    def states(self) -> str:
        return ' '.join(f'{site}/{shard}:{p.label}' for (site, shard), p in self.follower.shards.items())
