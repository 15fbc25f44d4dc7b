"""Driving a differential-drive base through its `cmd_vel` (geometry_msgs/Twist) and `odom` (nav_msgs/Odometry)
topics — what Gazebo's diff-drive system exposes through ros_gz_bridge, and what most real bases offer — and the
executor plug-in `fleet_agent.motion:diff_drive_executor` that runs `goto` commands on them.

Its parameters (`motion.*`, declared on the agent host node) choose the topics and the steering limits; a relative
topic name is taken in the agent's namespace `/<site>/<agent>`, and `{site}`/`{agent}` stand for the ids, so one
simulation host can drive many robots (`/model/{agent}/cmd_vel`)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.exceptions import InvalidTopicNameException
from rclpy.node import Node
from rclpy.validate_full_topic_name import validate_full_topic_name

from fleet_agent.executors import ExecutorContext, ExecutorFactory, GotoExecutor, MotionError, SleepExecutor
from fleet_agent.steering import Pose, SteeringLimits, yaw_of_quaternion
from fleet_core import topics
from fleet_core.config import ConfigError
from fleet_ros import qos
from fleet_ros.params import declare

PARAMETER_PREFIX = 'motion.'


@dataclass(frozen=True, slots=True)
class MotionSettings:
    """The `motion.*` parameters of an agent host (one set for every robot it hosts)."""

    cmd_vel_topic: str = topics.CMD_VEL
    odom_topic: str = topics.ODOM
    tolerance_m: float = 0.1
    yaw_tolerance_rad: float = 0.1
    control_rate_hz: float = 20.0
    odom_timeout_sec: float = 1.0
    first_odom_timeout_sec: float = 10.0
    max_linear_mps: float = 0.5
    max_angular_rps: float = 1.0
    linear_gain: float = 1.0
    angular_gain: float = 2.0
    rotate_in_place_rad: float = 0.5

    def limits(self) -> SteeringLimits:
        return SteeringLimits(
            max_linear_mps=self.max_linear_mps,
            max_angular_rps=self.max_angular_rps,
            linear_gain=self.linear_gain,
            angular_gain=self.angular_gain,
            rotate_in_place_rad=self.rotate_in_place_rad,
        )


_DESCRIPTIONS: dict[str, tuple[str, tuple[float, float] | None]] = {
    'cmd_vel_topic': (
        'geometry_msgs/Twist velocity command topic; relative = in /<site>/<agent>; {site} and {agent} are replaced',
        None,
    ),
    'odom_topic': ('nav_msgs/Odometry topic of the base; relative = in /<site>/<agent>; {site}, {agent}', None),
    'tolerance_m': ('a goto succeeds once the odometry position is this close to the target (m)', (0.005, 10.0)),
    'yaw_tolerance_rad': ('heading tolerance when a goto gives theta (rad)', (0.005, math.pi)),
    'control_rate_hz': ('velocity commands per second while driving', (1.0, 200.0)),
    'odom_timeout_sec': ('a goto halts and fails when no odometry arrived for this long (s)', (0.05, 30.0)),
    'first_odom_timeout_sec': (
        'before the first odometry since the agent started (discovery still matching the base), a goto waits this long'
        ' for it, sending the base nothing, then fails (s)',
        (0.05, 300.0),
    ),
    'max_linear_mps': ('forward speed limit (m/s)', (0.01, 10.0)),
    'max_angular_rps': ('turn rate limit (rad/s)', (0.01, 10.0)),
    'linear_gain': ('forward speed per metre to the target, before the limit (1/s)', (0.01, 100.0)),
    'angular_gain': ('turn rate per radian of heading error, before the limit (1/s)', (0.01, 100.0)),
    'rotate_in_place_rad': ('above this heading error the base turns on the spot (rad)', (0.01, math.pi)),
}


def declare_motion_settings(node: Node) -> MotionSettings:
    """Declare the `motion.*` parameters on `node` (read-only, numeric ones ranged) unless an earlier agent of the
    same host did, and return their values."""
    defaults = MotionSettings()
    values: dict[str, object] = {}
    for f in fields(MotionSettings):
        name = PARAMETER_PREFIX + f.name
        if node.has_parameter(name):
            values[f.name] = node.get_parameter(name).value
        else:
            description, bounds = _DESCRIPTIONS[f.name]
            values[f.name] = declare(
                node, name, getattr(defaults, f.name), description, read_only=True, value_range=bounds
            )
    return MotionSettings(**values)  # type: ignore[arg-type]  # each value was declared with the field's default as its type, which rclpy then enforces


def agent_topic(name: str, site_id: str, agent_id: str) -> str:
    """`name` with {site}/{agent} replaced, taken in /<site>/<agent> unless absolute.

    Raises ConfigError for an unknown placeholder or an invalid topic name."""
    try:
        expanded = name.format(site=site_id, agent=agent_id)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f'topic {name!r}: only {{site}} and {{agent}} may be replaced ({exc!r})') from None
    full = expanded if expanded.startswith('/') else f'{topics.agent_namespace(site_id, agent_id)}/{expanded}'
    try:
        validate_full_topic_name(full)
    except InvalidTopicNameException as exc:
        raise ConfigError(f'topic {name!r} gives an invalid name {full!r}: {exc}') from None
    return full


def pose_of(msg: Odometry) -> Pose:
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return p.x, p.y, yaw_of_quaternion(q.x, q.y, q.z, q.w)


class TwistOdomBackend:
    """A MotionBackend on one base's velocity command and odometry topics. Odometry arrives on the spin thread and
    is read on the asyncio loop; commands are published from the loop."""

    def __init__(
        self,
        node: Node,
        *,
        cmd_vel_topic: str,
        odom_topic: str,
        loop: asyncio.AbstractEventLoop,
        odom_timeout_sec: float,
        first_odom_timeout_sec: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.odom_topic = odom_topic
        self.loop = loop
        self.odom_timeout_sec = odom_timeout_sec
        self.first_odom_timeout_sec = max(first_odom_timeout_sec, odom_timeout_sec)
        """How long a goto waits before any odometry has arrived: a robot computer's first goto may come before
        discovery has matched the base (seen under load), and nothing drives the base until a pose is known."""
        self.clock = clock
        self._latest: tuple[Pose, float] | None = None
        self._fresh = asyncio.Event()
        self._publisher = node.create_publisher(Twist, cmd_vel_topic, qos.VELOCITY_COMMAND)
        node.create_subscription(Odometry, odom_topic, self._on_odom, qos.TELEMETRY)

    def _on_odom(self, msg: Odometry) -> None:
        self._latest = (pose_of(msg), self.clock())
        # Wake the loop only while a goto waits for odometry (it clears the event), not for every message.
        if not self._fresh.is_set():
            self.loop.call_soon_threadsafe(self._fresh.set)

    async def pose(self) -> Pose:
        latest = self._latest
        if latest is not None and self.clock() - latest[1] <= self.odom_timeout_sec:
            return latest[0]
        self._fresh.clear()
        bound = self.odom_timeout_sec if latest is not None else self.first_odom_timeout_sec
        try:
            async with asyncio.timeout(bound):
                await self._fresh.wait()
        except TimeoutError:
            since = '' if latest is not None else ' (none since the agent started)'
            raise MotionError(f'no odometry on {self.odom_topic} for {bound:g} s{since}') from None
        latest = self._latest
        if latest is None:  # set before _fresh; checked, since asserts vanish under python -O
            raise MotionError(f'no odometry on {self.odom_topic}')
        return latest[0]

    def drive(self, linear_mps: float, angular_rps: float) -> None:
        msg = Twist()
        msg.linear.x = float(linear_mps)
        msg.angular.z = float(angular_rps)
        self._publisher.publish(msg)

    def halt(self) -> None:
        # Under the program runtime the context is still valid while the agent's work is cancelled, so the stop
        # reaches the base; the check guards a context that is gone anyway (an embedding without the runtime, or a
        # halt after shutdown), where only the base's own cmd_vel timeout can stop it.
        if self.node.context.ok():
            self._publisher.publish(Twist())


def diff_drive_executor(delay_sec: float) -> ExecutorFactory:
    """`executor:=fleet_agent.motion:diff_drive_executor`: `goto` drives the base on cmd_vel/odom (GotoExecutor);
    other kinds complete after `exec_delay_sec` (plus `duration_sec`) like the sleep executor."""

    def executor(context: ExecutorContext) -> GotoExecutor:
        settings = declare_motion_settings(context.node)
        cmd_vel = agent_topic(settings.cmd_vel_topic, context.site_id, context.agent_id)
        odom = agent_topic(settings.odom_topic, context.site_id, context.agent_id)
        backend = TwistOdomBackend(
            context.node,
            cmd_vel_topic=cmd_vel,
            odom_topic=odom,
            loop=context.loop,
            odom_timeout_sec=settings.odom_timeout_sec,
            first_odom_timeout_sec=settings.first_odom_timeout_sec,
        )
        context.node.get_logger().info(f'agent {context.agent_id}: goto drives {cmd_vel} from {odom}')
        return GotoExecutor(
            backend,
            fallback=SleepExecutor(delay_sec),
            limits=settings.limits(),
            tolerance_m=settings.tolerance_m,
            yaw_tolerance_rad=settings.yaw_tolerance_rad,
            control_dt=1.0 / settings.control_rate_hz,
        )

    return executor
