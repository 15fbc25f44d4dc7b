"""SimExecutor: the CommandExecutor of a simulated robot (undock, goto, inspect, report, dock) with seeded failures,
slow-down faults, battery, and a ground-truth execution log. Plugs into AgentHostNode like a vendor executor."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fleet_agent.executors import ExecutionResult, ExecutorContext, ExecutorFactory
from fleet_core.model import Command
from fleet_sim.execlog import ExecutionLog
from fleet_sim.faults import FaultState
from fleet_sim.robot import SimRobot
from fleet_sim.settings import SimSettings

EXEC_LOG_ENV = 'FLEET_SIM_EXEC_LOG'


def agent_rng(seed: int, agent_id: str) -> random.Random:
    """A per-robot RNG that does not depend on which host process runs the robot."""
    digest = hashlib.sha256(f'{seed}:{agent_id}'.encode()).digest()
    return random.Random(int.from_bytes(digest[:8], 'big'))


class SimExecutor:
    """Runs one robot's commands in simulated time (real seconds): motion at `speed_mps`, fixed work times."""

    def __init__(
        self,
        robot: SimRobot,
        settings: SimSettings,
        *,
        rng: random.Random,
        log: ExecutionLog | None = None,
        faults: FaultState | None = None,
        agent_clock: Callable[[], float] = time.time,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.robot = robot
        self.settings = settings
        self.rng = rng
        self.log = log
        self.faults = faults
        self.agent_clock = agent_clock
        self.wall = wall
        self.executed = 0

    def battery_pct(self) -> float:
        return self.robot.battery(self.wall())

    def _slow(self) -> float:
        return self.faults.slow_factor(self.robot.agent_id) if self.faults is not None else 1.0

    async def execute(self, command: Command, args: Mapping[str, Any]) -> ExecutionResult:
        now = self.wall()
        if self.log is not None:
            self.log.started(command, now, self.agent_clock())
        self.executed += 1
        status = 'CANCELLED'
        try:
            result = await self._run(command, args)
            status = 'SUCCEEDED' if result.success else 'FAILED'
            return result
        finally:
            if self.log is not None:
                self.log.finished(command, self.wall(), status)

    async def _run(self, command: Command, args: Mapping[str, Any]) -> ExecutionResult:
        s = self.settings
        kind = command.kind
        fails = self.rng.random() < s.failure_rate(kind)
        if kind == 'goto':
            if args.get('point_id') == 'home':
                # "Home" is the robot's own dock: a robot knows where its dock is (the mission only says "go home").
                return await self._goto(*self.robot.home, fails)
            return await self._goto(float(args['x']), float(args['y']), fails)
        durations = {'undock': s.undock_sec, 'dock': s.dock_sec, 'report': s.report_sec, 'noop': 0.0}
        if kind == 'inspect':
            duration = float(args.get('duration_sec', s.inspect_sec))
        elif kind == 'sleep':
            duration = float(args.get('duration_sec', 0.0))
        else:
            duration = durations.get(kind, 0.0)
        if duration > 0:
            await asyncio.sleep(duration * self._slow())
        if fails:
            return ExecutionResult(False, f'simulated {kind} failure')
        if kind == 'undock':
            self.robot.set_docked(False, self.wall())
        elif kind == 'dock':
            self.robot.set_docked(True, self.wall())
        point = args.get('point_id', '')
        return ExecutionResult(True, f'{kind} {point}'.strip())

    async def _goto(self, x: float, y: float, fails: bool) -> ExecutionResult:
        if self.robot.docked:
            self.robot.set_docked(False, self.wall())
        speed = self.settings.speed_mps / self._slow()
        travel = self.robot.start_motion(x, y, speed, self.wall())
        try:
            # A simulated failure stops the robot half-way (blocked path), as a real base would.
            await asyncio.sleep(travel / 2 if fails else travel)
        except asyncio.CancelledError:
            self.robot.halt(self.wall())
            raise
        if fails:
            self.robot.halt(self.wall())
            return ExecutionResult(False, 'simulated goto failure: path blocked')
        self.robot.arrive(self.wall())
        return ExecutionResult(True, f'reached ({x:.2f}, {y:.2f})')


def agent_factory(delay_sec: float) -> ExecutorFactory:
    """For `fleet_agent --ros-args -p executor:=fleet_sim.executor:agent_factory`: default settings, robots at the
    origin, execution log at $FLEET_SIM_EXEC_LOG when set. (`fleet_sim_host` adds odometry and faults.)"""
    settings = SimSettings(inspect_sec=max(delay_sec, SimSettings().inspect_sec))
    log_path = os.environ.get(EXEC_LOG_ENV)
    log = ExecutionLog(Path(log_path), f'agent-{os.getpid()}') if log_path else None

    def executor(spec: ExecutorContext) -> SimExecutor:
        return SimExecutor(
            SimRobot(spec.agent_id, (0.0, 0.0)), settings, rng=agent_rng(settings.seed, spec.agent_id), log=log
        )

    return executor
