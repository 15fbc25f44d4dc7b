"""The executor plug-in API a robot vendor implements, and the executors that ship with fleetlanes.

An executor runs one accepted command. It is async and cancellable: the agent cancels the task on e-stop,
on a SAFETY `stop`, or at the command's deadline, and the coroutine sees `asyncio.CancelledError`.

A plug-in is `package.module:function` (the agent's `executor` parameter): `function(exec_delay_sec)` returns an
`ExecutorFactory`, which the agent host calls once per hosted agent with that agent's `ExecutorContext`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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


class MotionBackend(Protocol):
    """What a goto needs from a robot base: its pose and a way to drive toward a point."""

    def pose(self) -> tuple[float, float, float]: ...

    async def drive_toward(self, x: float, y: float, dt: float) -> None: ...

    async def halt(self) -> None: ...


class GotoExecutor:
    """Nav2-style goto: drive to (x, y) until within `tolerance_m`, then report success. Other kinds are
    delegated to `fallback`. The motion itself comes from a MotionBackend (simulated base, or a cmd_vel/odom
    bridge on a real robot)."""

    def __init__(
        self, backend: MotionBackend, *, fallback: CommandExecutor, tolerance_m: float = 0.1, control_dt: float = 0.05
    ) -> None:
        self.backend = backend
        self.fallback = fallback
        self.tolerance_m = tolerance_m
        self.control_dt = control_dt

    async def execute(self, command: Command, args: Mapping[str, Any]) -> ExecutionResult:
        if command.kind != 'goto':
            return await self.fallback.execute(command, args)
        x, y = float(args['x']), float(args['y'])
        try:
            while True:
                px, py, _ = self.backend.pose()
                if math.hypot(x - px, y - py) <= self.tolerance_m:
                    return ExecutionResult(True, f'reached ({x:.2f}, {y:.2f})')
                await self.backend.drive_toward(x, y, self.control_dt)
        except asyncio.CancelledError:
            await self.backend.halt()
            raise
