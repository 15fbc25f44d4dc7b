"""System tests of the Gazebo path without Gazebo: an orchestrator, an agent host running the cmd_vel/odom executor
(`fleet_agent.motion:diff_drive_executor`) for two robots, and one kinematic diff-drive stand-in
(`fleet_diff_drive_sim`) per robot in the robot's namespace, as ros_gz_bridge would expose a Gazebo model."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry

from fleet_core import topics
from fleet_interfaces.msg import CommandOutcome, CommandOutcomes, Heartbeat, LeaderLease
from fleet_interfaces.srv import SetEStop, SubmitCommand
from fleet_ros import qos
from harness import ros2_tools
from harness.ros import RosHarness

pytestmark = pytest.mark.system
SITE, SHARD = 'site_m', 'zone_m'
AGENTS = ('r001', 'r002')
TOLERANCE_M = 0.1  # the executor's default motion.tolerance_m
ODOM_LAG_M = 0.03  # the base moves on between the odometry sample that says "arrived" and the halt reaching it
EXECUTOR = 'fleet_agent.motion:diff_drive_executor'


@dataclass
class Track:
    """What one robot's topics carried, with receipt times (monotonic)."""

    odom: list[tuple[float, Odometry]] = field(default_factory=list)
    twists: list[tuple[float, Twist]] = field(default_factory=list)

    def position(self) -> tuple[float, float]:
        p = self.odom[-1][1].pose.pose.position
        return p.x, p.y


class Fleet:
    def __init__(self, ros: RosHarness) -> None:
        self.ros = ros
        node = ros.node('motion_probe')
        self.tracks = {a: Track() for a in AGENTS}
        for agent, track in self.tracks.items():
            node.create_subscription(
                Odometry,
                topics.agent_odom(SITE, agent),
                lambda msg, t=track: t.odom.append((time.monotonic(), msg)),
                qos.TELEMETRY,
            )
            node.create_subscription(
                Twist,
                f'{topics.agent_namespace(SITE, agent)}/cmd_vel',
                lambda msg, t=track: t.twists.append((time.monotonic(), msg)),
                qos.VELOCITY_COMMAND,
            )
        self.outcomes: dict[str, CommandOutcome] = {}

        def record(batch: CommandOutcomes) -> None:
            for msg in batch.outcomes:
                self.outcomes.setdefault(msg.command_id, msg)

        node.create_subscription(CommandOutcomes, topics.shard_outcome(SITE, SHARD), record, qos.EVENTS)
        self.bases: dict[str, Any] = {}
        self.beating: set[str] = set()
        node.create_subscription(
            Heartbeat, topics.shard_heartbeat(SITE, SHARD), lambda msg: self.beating.add(msg.agent_id), qos.HEARTBEAT
        )
        self.leases: list[LeaderLease] = []
        node.create_subscription(LeaderLease, topics.shard_leader(SITE, SHARD), self.leases.append, qos.LATCHED)
        self.submit_client = node.create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))
        self.estop_client = node.create_client(SetEStop, topics.shard_set_estop(SITE, SHARD))

    def goto(self, agent: str, x: float, y: float, ttl: float = 60.0) -> str:
        args = json.dumps({'x': x, 'y': y})
        request = SubmitCommand.Request(agent_ids=[agent], kind='goto', args_json=args, priority=1, ttl_sec=ttl)
        reply = self.ros.submit(self.submit_client, request)
        assert reply.accepted, reply.error
        return str(reply.command_ids[0])

    def outcome(self, command_id: str, timeout: float) -> CommandOutcome:
        return self.ros.spin_until(lambda: self.outcomes.get(command_id), timeout, f'the outcome of {command_id}')

    def estop(self, engage: bool) -> None:
        request = SetEStop.Request(engage=engage, reason='motion test', issued_by='test')
        reply = self.ros.call(lambda: self.estop_client.call_async(request), 30, 'the e-stop reply')
        assert reply.ok, reply.error

    def odom_after(self, agent: str, since: float, count: int = 1) -> list[Odometry]:
        """The first `count` odometry messages of `agent` received after `since` (waits for them)."""
        track = self.tracks[agent]

        def later() -> list[Odometry]:
            msgs = [m for t, m in track.odom if t > since]
            return msgs[:count] if len(msgs) >= count else []

        return self.ros.spin_until(later, 15, f'{count} odometry message(s) of {agent}')


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / 'fleet.yaml'
    layout = {SITE: {'shards': {SHARD: {'agents': list(AGENTS)}}}}
    path.write_text(yaml.safe_dump({'sites': layout, 'dispatch': {'retry_initial_sec': 0.3, 'retry_max_sec': 1.0}}))
    return path


def start_fleet(
    ros, processes, tmp_path: Path, start_agents: Callable[[Path], object], agents: tuple[str, ...] = AGENTS
) -> Fleet:
    """The orchestrator, one stand-in per robot in its namespace, and `agents` started by `start_agents(config)`;
    returns once every one of them beats."""
    config = write_config(tmp_path)
    probe = Fleet(ros)
    processes.start(['shard_orchestrator', '--ros-args', *common_params(config)], name='orchestrator')
    start_agents(config)
    for agent, yaw in zip(AGENTS, (0.0, math.pi / 2), strict=True):
        # No command timeout in the stand-ins: only a zero twist from the agent stops them.
        sim_params = ['-p', 'cmd_vel_timeout_sec:=0.0', '-p', f'initial_yaw:={yaw}']
        probe.bases[agent] = processes.start(
            ['fleet_diff_drive_sim', '--ros-args', '-r', f'__ns:={topics.agent_namespace(SITE, agent)}', *sim_params],
            name=f'base-{agent}',
        )
    ros.spin_until(
        lambda: probe.submit_client.service_is_ready() and probe.estop_client.service_is_ready() and probe.leases,
        60,
        'the shard services and a leader lease',
    )
    ros.spin_until(lambda: all(t.odom for t in probe.tracks.values()), 30, 'odometry from every stand-in')
    ros.spin_until(lambda: probe.beating >= set(agents), 60, f'heartbeats of {", ".join(agents)}')
    return probe


def common_params(config: Path) -> list[str]:
    return ['-p', f'fleet_config:={config}', '-p', f'site_id:={SITE}', '-p', f'shard_id:={SHARD}']


@pytest.fixture
def fleet(ros, processes, tmp_path):
    """Both robots hosted by one fleet_agent process (as a simulation host would)."""

    def agent_host(config: Path) -> object:
        store = ['-p', f'store_dir:={tmp_path / "stores"}', '-p', f'executor:={EXECUTOR}']
        return processes.start(['fleet_agent', '--ros-args', *common_params(config), *store], name='agents')

    return start_fleet(ros, processes, tmp_path, agent_host)


def is_zero(twist: Twist) -> bool:
    return twist.linear.x == 0.0 and twist.angular.z == 0.0


def assert_stationary(fleet: Fleet, agent: str, since: float) -> None:
    """Once stopped, the base stays put (the stand-ins have no command timeout: a moving command would move it).

    `since` is when the probe saw the halt; the base may publish odometry integrated before it got that halt, so
    stillness is judged from the base's first zero-twist report after `since`: every later report is at that pose."""
    track = fleet.tracks[agent]

    def still_run() -> list[Odometry]:
        msgs = [m for t, m in track.odom if t > since]
        stopped = next((i for i, m in enumerate(msgs) if is_zero(m.twist.twist)), None)
        return msgs[stopped : stopped + 15] if stopped is not None and len(msgs) - stopped >= 15 else []

    first, *_, last = fleet.ros.spin_until(still_run, 15, f'15 odometry messages of {agent} from its first halt on')
    assert is_zero(last.twist.twist), last.twist.twist
    a, b = first.pose.pose.position, last.pose.pose.position
    assert math.hypot(b.x - a.x, b.y - a.y) < 1e-9, (a, b)


def test_goto_drives_each_robot_to_its_target_and_halts(fleet):
    targets = {'r001': (1.2, 0.6), 'r002': (-0.8, 0.5)}
    commands = {agent: fleet.goto(agent, *target) for agent, target in targets.items()}
    for agent, command_id in commands.items():
        outcome = fleet.outcome(command_id, 60)
        assert outcome.outcome == CommandOutcome.OUTCOME_SUCCEEDED, (agent, outcome.detail)
    done = time.monotonic()
    for agent, (x, y) in targets.items():
        final = fleet.odom_after(agent, done)[0].pose.pose.position
        assert math.hypot(final.x - x, final.y - y) <= TOLERANCE_M + ODOM_LAG_M, (agent, final, (x, y))
        assert_stationary(fleet, agent, done)
        track = fleet.tracks[agent]
        assert any(not is_zero(t) for _, t in track.twists), agent  # it drove
        assert is_zero(track.twists[-1][1]), track.twists[-1]  # and the last command it got is a halt


def test_estop_halts_a_moving_robot_at_once(fleet):
    command_id = fleet.goto('r001', 30.0, 0.0)
    track = fleet.tracks['r001']
    fleet.ros.spin_until(lambda: track.odom[-1][1].twist.twist.linear.x > 0.2, 30, 'r001 driving toward its far target')
    try:
        engaged_at = time.monotonic()
        fleet.estop(engage=True)
        halts = fleet.ros.spin_until(
            lambda: [t for t, msg in track.twists if t >= engaged_at and is_zero(msg)], 10, 'a zero twist on cmd_vel'
        )
        outcome = fleet.outcome(command_id, 30)
        assert outcome.outcome == CommandOutcome.OUTCOME_CANCELLED, (outcome.outcome, outcome.detail)
        assert_stationary(fleet, 'r001', halts[0])
        # Nothing drove it again after the halt.
        assert all(is_zero(msg) for t, msg in track.twists if t >= halts[0])
    finally:
        fleet.estop(engage=False)


def test_deadline_stops_the_robot_and_fails_the_goto(fleet):
    command_id = fleet.goto('r002', 0.0, 30.0, ttl=3.0)
    track = fleet.tracks['r002']
    outcome = fleet.outcome(command_id, 30)
    assert outcome.outcome in (CommandOutcome.OUTCOME_FAILED, CommandOutcome.OUTCOME_EXPIRED), outcome.detail
    driving = [t for t, msg in track.twists if not is_zero(msg)]
    halts = [t for t, msg in track.twists if is_zero(msg)]
    assert driving and halts and halts[-1] > driving[-1], 'the last command on cmd_vel must be a halt'
    assert track.position()[1] > 0.3  # it had been driving toward the target
    assert_stationary(fleet, 'r002', halts[-1])


def test_lost_odometry_halts_and_fails_the_goto(fleet):
    command_id = fleet.goto('r002', 0.0, 30.0)
    track = fleet.tracks['r002']
    fleet.ros.spin_until(lambda: track.odom[-1][1].twist.twist.linear.x > 0.2, 30, 'r002 driving')
    fleet.bases['r002'].kill()  # the simulator (or the bridge) dies: odometry stops
    killed = time.monotonic()
    outcome = fleet.outcome(command_id, 30)
    assert outcome.outcome == CommandOutcome.OUTCOME_FAILED, outcome.detail
    assert 'no odometry on /site_m/r002/odom' in outcome.detail, outcome.detail
    assert any(t > killed and is_zero(msg) for t, msg in track.twists), 'no halt after odometry was lost'


@ros2_tools.require()
def test_robot_launch_selects_the_motion_executor(ros, processes, tmp_path):
    """`ros2 launch fleet_bringup robot_launch.py executor:=fleet_agent.motion:diff_drive_executor`, as on a robot
    computer: the launched agent drives its base to the goto target, and stopping the launch stops the agent."""
    launches = []

    def robot_launch(config: Path) -> object:
        argv = ['ros2', 'launch', 'fleet_bringup', 'robot_launch.py', f'fleet_config:={config}', 'agent_id:=r001']
        argv += [f'executor:={EXECUTOR}', f'store_dir:={tmp_path / "store"}']
        launches.append(processes.start(argv, name='robot_launch'))
        return launches[-1]

    fleet = start_fleet(ros, processes, tmp_path, robot_launch, agents=('r001',))
    outcome = fleet.outcome(fleet.goto('r001', 0.9, -0.7), 60)
    assert outcome.outcome == CommandOutcome.OUTCOME_SUCCEEDED, outcome.detail
    final = fleet.odom_after('r001', time.monotonic())[0].pose.pose.position
    assert math.hypot(final.x - 0.9, final.y + 0.7) <= TOLERANCE_M + ODOM_LAG_M, final
    (launch,) = launches
    agent_pids = [
        int(line.rsplit('[', 1)[1].rstrip(']'))
        for line in launch.output().splitlines()
        if 'process started with pid' in line
    ]
    assert len(agent_pids) == 1, launch.output()
    assert launch.stop() == 0
    assert not os.path.exists(f'/proc/{agent_pids[0]}'), 'the launched agent outlived its launch'
