"""nav_msgs/Odometry for every simulated robot of a host, on /<site>/<agent>/odom, at a rate that drops with the
shard's degradation level (ShardStatus.degradation_level, applied by each AgentRuntime)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping

from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.publisher import Publisher

from fleet_agent.runtime import AgentRuntime
from fleet_core import topics
from fleet_core.degradation import DegradationConfig, telemetry_rate_factor
from fleet_ros import qos
from fleet_ros.convert import to_time
from fleet_sim.robot import SimRobot


def map_frame(site_id: str) -> str:
    return f'{site_id}_map'


class OdometryPublisher:
    """One publisher and one reusable message per robot; `run()` publishes each robot when it is due."""

    def __init__(
        self,
        node: Node,
        robots: Mapping[str, SimRobot],
        runtimes: Mapping[str, AgentRuntime],
        *,
        rate_hz: float,
        degradation: DegradationConfig | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.robots = robots
        self.runtimes = runtimes
        self.rate_hz = rate_hz
        self.degradation = degradation or DegradationConfig()
        self.wall = wall
        self.published = 0
        self._pubs: dict[str, Publisher] = {}
        self._msgs: dict[str, Odometry] = {}
        self._next_due: dict[str, float] = {}
        for agent_id, runtime in runtimes.items():
            self._pubs[agent_id] = node.create_publisher(
                Odometry, topics.agent_odom(runtime.site_id, agent_id), qos.TELEMETRY
            )
            msg = Odometry()
            msg.header.frame_id = map_frame(runtime.site_id)
            msg.child_frame_id = f'{agent_id}/base_link'
            self._msgs[agent_id] = msg

    def period_of(self, agent_id: str) -> float:
        level = self.runtimes[agent_id].degradation_level
        return 1.0 / (self.rate_hz * telemetry_rate_factor(level, self.degradation))

    def publish_due(self, now: float) -> int:
        count = 0
        for agent_id, robot in self.robots.items():
            if now < self._next_due.get(agent_id, 0.0):
                continue
            self._next_due[agent_id] = now + self.period_of(agent_id)
            msg = self._msgs[agent_id]
            x, y, heading = robot.pose(now)
            vx, vy = robot.velocity(now)
            msg.header.stamp = to_time(now)
            msg.pose.pose.position.x = x
            msg.pose.pose.position.y = y
            msg.pose.pose.orientation.z = math.sin(heading / 2)
            msg.pose.pose.orientation.w = math.cos(heading / 2)
            msg.twist.twist.linear.x = math.hypot(vx, vy)
            self._pubs[agent_id].publish(msg)
            count += 1
        self.published += count
        return count

    async def run(self) -> None:
        tick = 1.0 / self.rate_hz
        while True:
            self.publish_due(self.wall())
            await asyncio.sleep(tick)
