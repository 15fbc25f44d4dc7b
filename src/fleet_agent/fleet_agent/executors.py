"""The executor plug-in API a robot vendor implements, and the executors that ship with fleetlanes.

An executor runs one accepted command. It is async and cancellable: the agent cancels the task on e-stop,
on a SAFETY `stop`, or at the command's deadline, and the coroutine sees `asyncio.CancelledError`.

A plug-in is `package.module:function` (the agent's `executor` parameter): `function(exec_delay_sec)` returns an
`ExecutorFactory`, which the agent host calls once per hosted agent with that agent's `ExecutorContext`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fleet_agent.steering import Pose, SteeringLimits, distance, steer, turn_toward, wrap_angle
from fleet_core.degradation import DegradationConfig, telemetry_rate_factor
from fleet_core.model import Command

if TYPE_CHECKING:
    from rclpy.node import Node


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    success: bool
    detail: str = ''


@runtime_checkable
class CommandExecutor(Protocol):
    """Runs commands on one robot. `execute` must not block the event loop (await I/O, never sleep())."""

    async def execute(self, command: Command, args: Mapping[str, Any]) -> ExecutionResult: ...


@dataclass(frozen=True, slots=True)
class ExecutorContext:
    """What an executor factory receives for one hosted agent. The identity fields are those of `AgentSpec`, so
    factories written against `AgentSpec` keep working. `node` is the agent host node: create publishers,
    subscriptions, clients and parameters on it (in the factory, before the node spins; check `has_parameter`
    first, since the factory runs once per hosted agent). The executor's coroutines run on `loop`."""

    site_id: str
    shard_id: str
    agent_id: str
    node: Node
    loop: asyncio.AbstractEventLoop
    degradation_level: Callable[[], int] = lambda: 0
    """The shard's degradation level this agent applies now (0 normal, 1 telemetry reduced, 2 telemetry minimal and
    LOW shed), from the leader's ShardStatus; the agent's heartbeat reports the same value."""
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    def telemetry_period(self, nominal_sec: float) -> float:
        """The period at which a plug-in relays its telemetry now: `nominal_sec` at level 0, longer as the shard
        degrades (by the fleet config's `degradation.telemetry_factor`). Read it each time: the level changes."""
        return nominal_sec / telemetry_rate_factor(self.degradation_level(), self.degradation)


ExecutorFactory = Callable[[ExecutorContext], CommandExecutor]


class SleepExecutor:
    """Completes every command after a fixed delay (plus `duration_sec` for `sleep`/`inspect`): a stand-in for
    link delay and work in tests and benchmarks."""

    def __init__(self, delay_sec: float = 0.0) -> None:
        self.delay_sec = delay_sec
        self.executed: list[str] = []

    async def execute(self, command: Command, args: Mapping[str, Any]) -> ExecutionResult:
        duration = self.delay_sec + float(args.get('duration_sec', 0.0))
        if duration > 0:
            await asyncio.sleep(duration)
        self.executed.append(command.command_id)
        return ExecutionResult(True)


class MotionError(Exception):
    """The base cannot be driven now (no odometry, or odometry gone stale); the message says what is missing.
    A goto that meets it halts the robot and fails with that message."""


class MotionBackend(Protocol):
    """What a goto needs from a robot base. `drive` and `halt` must act at once (publish, never wait): `halt` is
    what an e-stop, a SAFETY stop or a deadline comes down to."""

    async def pose(self) -> Pose:
        """The latest (x, y, yaw); waits a bounded time for a fresh one. Raises MotionError when none comes."""
        ...

    def drive(self, linear_mps: float, angular_rps: float) -> None: ...

    def halt(self) -> None: ...


class GotoExecutor:
    """Drives a `goto` to (x, y) until within `tolerance_m` (then, if the command gives `theta`, turns to that
    heading), halts and reports success. The steering law is fleet_agent.steering; the base is a MotionBackend
    (fleet_agent.motion drives cmd_vel/odom topics). Cancellation (e-stop, SAFETY stop, deadline) halts the base
    before the CancelledError propagates. Other kinds are delegated to `fallback`."""

    def __init__(
        self,
        backend: MotionBackend,
        *,
        fallback: CommandExecutor,
        limits: SteeringLimits | None = None,
        tolerance_m: float = 0.1,
        yaw_tolerance_rad: float = 0.1,
        control_dt: float = 0.05,
    ) -> None:
        self.backend = backend
        self.fallback = fallback
        self.limits = limits or SteeringLimits()
        self.tolerance_m = tolerance_m
        self.yaw_tolerance_rad = yaw_tolerance_rad
        self.control_dt = control_dt

    async def execute(self, command: Command, args: Mapping[str, Any]) -> ExecutionResult:
        if command.kind != 'goto':
            return await self.fallback.execute(command, args)
        x, y = float(args['x']), float(args['y'])
        theta = float(args['theta']) if args.get('theta') is not None else None
        try:
            pose = await self._drive_to(x, y)
            if theta is not None:
                pose = await self._turn_to(theta)
        except MotionError as exc:
            return ExecutionResult(False, f'goto ({x:.2f}, {y:.2f}) stopped: {exc}')
        finally:
            self.backend.halt()
        return ExecutionResult(True, f'reached ({pose[0]:.2f}, {pose[1]:.2f}) for ({x:.2f}, {y:.2f})')

    async def _drive_to(self, x: float, y: float) -> Pose:
        while True:
            pose = await self.backend.pose()
            if distance(pose, x, y) <= self.tolerance_m:
                return pose
            self.backend.drive(*steer(pose, x, y, self.limits))
            await asyncio.sleep(self.control_dt)

    async def _turn_to(self, heading: float) -> Pose:
        while True:
            pose = await self.backend.pose()
            if abs(wrap_angle(heading - pose[2])) <= self.yaw_tolerance_rad:
                return pose
            self.backend.drive(*turn_toward(pose, heading, self.limits))
            await asyncio.sleep(self.control_dt)
