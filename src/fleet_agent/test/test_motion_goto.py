"""The agent side of the Gazebo path without ROS processes: the steering law, GotoExecutor on a fake base, and the
topic names of the cmd_vel/odom backend."""

from __future__ import annotations

import asyncio
import math

import pytest

from fleet_agent.executors import ExecutionResult, GotoExecutor, MotionError, SleepExecutor
from fleet_agent.motion import agent_topic
from fleet_agent.steering import SteeringError, SteeringLimits, steer, wrap_angle, yaw_of_quaternion
from fleet_core.config import ConfigError
from fleet_core.model import Command, Priority
from harness.wait import async_wait_for

LIMITS = SteeringLimits(max_linear_mps=0.5, max_angular_rps=1.0, rotate_in_place_rad=0.5)


def command(kind: str = 'goto') -> Command:
    return Command(
        command_id='c1',
        trace_id='t1',
        site_id='s',
        agent_id='r001',
        shard_id='z',
        seq=1,
        epoch=1,
        attempt=1,
        kind=kind,
        args_json='{}',
        priority=Priority.NORMAL,
        deadline=1e12,
        issued_at=0.0,
    )


def test_steer_turns_on_the_spot_when_facing_away_and_drives_when_facing_the_target():
    linear, angular = steer((0.0, 0.0, 0.0), 0.0, 1.0, LIMITS)  # target 90 degrees to the left
    assert linear == 0.0 and angular == pytest.approx(1.0)
    linear, angular = steer((0.0, 0.0, math.pi), 0.0, 1.0, LIMITS)  # facing -x, the target is to the right
    assert linear == 0.0 and angular == pytest.approx(-1.0)
    linear, angular = steer((0.0, 0.0, 0.0), 3.0, 0.0, LIMITS)
    assert linear == pytest.approx(0.5) and angular == 0.0
    linear, _ = steer((0.0, 0.0, 0.0), 0.2, 0.0, LIMITS)  # slows down on approach
    assert linear == pytest.approx(0.2)


def test_angles_and_limits():
    assert wrap_angle(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert yaw_of_quaternion(0.0, 0.0, math.sin(0.4), math.cos(0.4)) == pytest.approx(0.8)
    with pytest.raises(SteeringError, match='max_linear_mps'):
        SteeringLimits(max_linear_mps=0.0)


class FakeBase:
    """A MotionBackend moving a unicycle by the last command for 0.05 s per pose read (Euler steps)."""

    STEP_SEC = 0.05

    def __init__(self, *, odometry: bool = True) -> None:
        self.x = self.y = self.yaw = 0.0
        self.odometry = odometry
        self.commands: list[tuple[float, float]] = [(0.0, 0.0)]

    async def pose(self) -> tuple[float, float, float]:
        if not self.odometry:
            raise MotionError('no odometry on /r/odom for 1 s')
        linear, angular = self.commands[-1]
        self.x += linear * self.STEP_SEC * math.cos(self.yaw)
        self.y += linear * self.STEP_SEC * math.sin(self.yaw)
        self.yaw = wrap_angle(self.yaw + angular * self.STEP_SEC)
        return self.x, self.y, self.yaw

    def drive(self, linear_mps: float, angular_rps: float) -> None:
        self.commands.append((linear_mps, angular_rps))

    def halt(self) -> None:
        self.drive(0.0, 0.0)


def run(coro):  # type: ignore[no-untyped-def]  # a test helper over any coroutine
    return asyncio.run(coro)


def test_goto_reaches_the_target_turns_to_theta_and_halts():
    base = FakeBase()
    goto = GotoExecutor(base, fallback=SleepExecutor(), tolerance_m=0.05, yaw_tolerance_rad=0.05, control_dt=0.0)
    result = run(goto.execute(command(), {'x': -1.0, 'y': 2.0, 'theta': 0.5}))
    assert result.success, result.detail
    assert math.hypot(base.x + 1.0, base.y - 2.0) <= 0.05
    assert abs(wrap_angle(base.yaw - 0.5)) <= 0.05
    assert base.commands[-1] == (0.0, 0.0)
    assert any(linear > 0 for linear, _ in base.commands)


def test_goto_halts_when_cancelled_and_fails_without_odometry():
    base = FakeBase()
    goto = GotoExecutor(base, fallback=SleepExecutor(), control_dt=0.01)

    async def cancelled() -> None:
        task = asyncio.create_task(goto.execute(command(), {'x': 50.0, 'y': 0.0}))
        await async_wait_for(lambda: len(base.commands) >= 3, 10.0, what='the base driving')
        task.cancel('e-stop engaged')
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancelled())
    assert base.commands[-2] != (0.0, 0.0) and base.commands[-1] == (0.0, 0.0)

    blind = FakeBase(odometry=False)
    result = run(GotoExecutor(blind, fallback=SleepExecutor()).execute(command(), {'x': 1.0, 'y': 0.0}))
    assert not result.success and 'no odometry' in result.detail
    assert blind.commands == [(0.0, 0.0), (0.0, 0.0)]  # the initial state, then the halt


def test_goto_executor_passes_other_kinds_to_its_fallback():
    fallback = SleepExecutor()
    result = run(GotoExecutor(FakeBase(), fallback=fallback).execute(command('inspect'), {}))
    assert result == ExecutionResult(True) and fallback.executed == ['c1']


def test_agent_topic_names():
    assert agent_topic('cmd_vel', 'site_a', 'r7') == '/site_a/r7/cmd_vel'
    assert agent_topic('/model/{agent}/odom', 'site_a', 'r7') == '/model/r7/odom'
    assert agent_topic('{site}_bridge/{agent}/cmd_vel', 's', 'r') == '/s/r/s_bridge/r/cmd_vel'
    with pytest.raises(ConfigError, match='only'):
        agent_topic('/model/{robot}/odom', 's', 'r')
    with pytest.raises(ConfigError, match='invalid'):
        agent_topic('/model/bad name', 's', 'r')


class _StubNode:
    """What TwistOdomBackend asks of its node: one publisher and one subscription, whose callback the test calls."""

    def __init__(self) -> None:
        self.on_odom = None

    def create_publisher(self, *_args):
        return None

    def create_subscription(self, _type, _topic, callback, _qos):
        self.on_odom = callback


def test_a_goto_waits_longer_for_the_first_odometry_than_for_fresh_odometry():
    """Before the base's first odometry (discovery still matching it after the agent started) a goto waits
    first_odom_timeout_sec; once odometry has come, odom_timeout_sec is the watchdog again."""
    from nav_msgs.msg import Odometry

    from fleet_agent.motion import TwistOdomBackend

    async def scenario() -> None:
        node = _StubNode()
        backend = TwistOdomBackend(
            node,  # type: ignore[arg-type]
            cmd_vel_topic='/r/cmd_vel',
            odom_topic='/r/odom',
            loop=asyncio.get_running_loop(),
            odom_timeout_sec=0.05,
            first_odom_timeout_sec=0.6,
        )
        # No odometry yet: a message 0.2 s later (four odometry timeouts) still gives the goto its pose.
        message = Odometry()
        message.pose.pose.position.x = 1.5
        message.pose.pose.orientation.w = 1.0
        asyncio.get_running_loop().call_later(0.2, node.on_odom, message)
        assert (await backend.pose())[0] == 1.5
        # Odometry then stops: once it is stale, the goto waits odom_timeout_sec (the message names the bound).
        await asyncio.sleep(0.1)
        with pytest.raises(MotionError, match=r'no odometry on /r/odom for 0.05 s$'):
            await backend.pose()

    async def never() -> None:
        backend = TwistOdomBackend(
            _StubNode(),  # type: ignore[arg-type]
            cmd_vel_topic='/r/cmd_vel',
            odom_topic='/r/odom',
            loop=asyncio.get_running_loop(),
            odom_timeout_sec=0.05,
            first_odom_timeout_sec=0.3,
        )
        with pytest.raises(MotionError, match=r'no odometry on /r/odom for 0.3 s \(none since the agent started\)'):
            await backend.pose()

    asyncio.run(scenario())
    asyncio.run(never())
