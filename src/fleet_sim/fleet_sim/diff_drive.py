"""`fleet_diff_drive_sim`: a kinematic stand-in for a Gazebo robot with the diff-drive system behind ros_gz_bridge.
It integrates geometry_msgs/Twist from `cmd_vel` and publishes nav_msgs/Odometry on `odom` at a fixed rate, so the
cmd_vel/odom executor (`fleet_agent.motion`) can be driven and tested where Gazebo is not installed. Run it in the
robot's namespace (`-r __ns:=/<site>/<agent>`) and the agent's default topics meet it."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.node import Node

from fleet_core import topics
from fleet_ros import qos
from fleet_ros.node import TypedNode
from fleet_ros.params import declare
from fleet_ros.runtime import RosProgram, run_program
from fleet_sim.kinematics import KinematicDiffDrive, KinematicsError

NODE_NAME = 'diff_drive_sim'


@dataclass(frozen=True, slots=True)
class DiffDriveSimSettings:
    """The node's parameters (all read-only: they shape the simulated base at start)."""

    cmd_vel_topic: str = topics.CMD_VEL  # relative: the robot's namespace, where the agent's motion backend looks
    odom_topic: str = topics.ODOM
    odom_frame: str = 'odom'
    base_frame: str = 'base_link'
    rate_hz: float = 50.0
    initial_x: float = 0.0
    initial_y: float = 0.0
    initial_yaw: float = 0.0
    max_linear_mps: float = 1.0
    max_angular_rps: float = 2.0
    cmd_vel_timeout_sec: float = 0.5


_DESCRIPTIONS: dict[str, tuple[str, tuple[float, float] | None]] = {
    'cmd_vel_topic': ('geometry_msgs/Twist velocity commands in (relative: in the node namespace)', None),
    'odom_topic': ('nav_msgs/Odometry out (relative: in the node namespace)', None),
    'odom_frame': ('header.frame_id of the odometry', None),
    'base_frame': ('child_frame_id of the odometry', None),
    'rate_hz': ('integration and odometry publishing rate (Hz)', (1.0, 1000.0)),
    'initial_x': ('start position x in the odometry frame (m)', (-1.0e6, 1.0e6)),
    'initial_y': ('start position y in the odometry frame (m)', (-1.0e6, 1.0e6)),
    'initial_yaw': ('start heading (rad)', (-math.pi, math.pi)),
    'max_linear_mps': ('commands beyond this forward speed are clamped (m/s)', (0.01, 100.0)),
    'max_angular_rps': ('commands beyond this turn rate are clamped (rad/s)', (0.01, 100.0)),
    'cmd_vel_timeout_sec': ('the base stops when no command came for this long; 0 = never (s)', (0.0, 60.0)),
}


def declare_settings(node: Node) -> DiffDriveSimSettings:
    defaults = DiffDriveSimSettings()
    values: dict[str, object] = {}
    for f in fields(DiffDriveSimSettings):
        description, bounds = _DESCRIPTIONS[f.name]
        values[f.name] = declare(
            node, f.name, getattr(defaults, f.name), description, read_only=True, value_range=bounds
        )
    return DiffDriveSimSettings(**values)  # type: ignore[arg-type]  # each value was declared with the field's default as its type, which rclpy then enforces


class DiffDriveSim(TypedNode):
    """One simulated base. Its timer integrates the latest command and publishes the odometry."""

    def __init__(
        self,
        node_name: str = NODE_NAME,
        *,
        context: Context | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(node_name, context=context)
        self.settings = settings = declare_settings(self)
        self.monotonic = clock
        self.base = KinematicDiffDrive(
            x=settings.initial_x,
            y=settings.initial_y,
            yaw=settings.initial_yaw,
            max_linear_mps=settings.max_linear_mps,
            max_angular_rps=settings.max_angular_rps,
            cmd_timeout_sec=settings.cmd_vel_timeout_sec,
            now=clock(),
        )
        self.commands = 0
        self._odom = Odometry()
        self._odom.header.frame_id = settings.odom_frame
        self._odom.child_frame_id = settings.base_frame
        self._publisher = self.create_publisher(Odometry, settings.odom_topic, qos.TELEMETRY)
        self.create_subscription(Twist, settings.cmd_vel_topic, self._on_cmd_vel, qos.VELOCITY_COMMAND)
        self.create_timer(1.0 / settings.rate_hz, self.publish_odometry)
        cmd_vel, odom = (self.resolve_topic_name(t) for t in (settings.cmd_vel_topic, settings.odom_topic))
        self.get_logger().info(
            f'base at ({settings.initial_x:g}, {settings.initial_y:g}) follows {cmd_vel}, '
            f'odometry on {odom} at {settings.rate_hz:g} Hz'
        )

    def _on_cmd_vel(self, msg: Twist) -> None:
        self.commands += 1
        self.base.command(msg.linear.x, msg.angular.z, self.monotonic())

    def publish_odometry(self) -> None:
        state = self.base.step(self.monotonic())
        msg = self._odom
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.pose.pose.position.x = state.x
        msg.pose.pose.position.y = state.y
        msg.pose.pose.orientation.z = math.sin(state.yaw / 2)
        msg.pose.pose.orientation.w = math.cos(state.yaw / 2)
        msg.twist.twist.linear.x = state.linear
        msg.twist.twist.angular.z = state.angular
        self._publisher.publish(msg)


def main(argv: Sequence[str] | None = None) -> int:
    return run_program(
        'fleet_diff_drive_sim', _run, args=list(argv) if argv is not None else None, startup_errors=(KinematicsError,)
    )


def _run(program: RosProgram) -> None:
    program.add_node(DiffDriveSim(context=program.context))
    program.spin()


if __name__ == '__main__':
    sys.exit(main())
