"""fleet_sim_host as a process: odometry per robot, a link cut that silences one robot then heals by itself, and a
restart on the same store that answers a redelivered command from the store instead of executing it again."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from nav_msgs.msg import Odometry
from std_msgs.msg import String

from fleet_core.model import AckStatus, Command, Priority
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandAck, Heartbeat
from fleet_ros import qos
from fleet_ros.convert import command_to_msg
from fleet_sim.execlog import audit
from fleet_sim.faults import FAULT_TOPIC, Fault
from harness.wait import WaitTimeout

pytestmark = pytest.mark.system

CONFIG = 'sites: {site_a: {shards: {zone_1: {agents: [h_r1, h_r2]}}}}\n'


def _host(processes: Any, tmp: Path) -> Any:
    config = tmp / 'fleet.yaml'
    config.write_text(CONFIG)
    return processes.start(
        [
            'fleet_sim_host',
            '--ros-args',
            '-r',
            '__ns:=/sim/h',
            '-p',
            f'fleet_config:={config}',
            '-p',
            'site_id:=site_a',
            '-p',
            'host_name:=h',
            '-p',
            f'store_dir:={tmp / "store"}',
            '-p',
            f'exec_log:={tmp / "exec-h.jsonl"}',
            '-p',
            'odom_rate_hz:=5.0',
            '-p',
            'report_sec:=0.0',
        ],
        name='sim_host',
    )


def test_odometry_link_cut_and_restart_on_the_same_store(ros: Any, processes: Any, tmp_path: Path) -> None:
    node = ros.node('sim_probe')
    beats: dict[str, float] = {}
    odom: list[Odometry] = []
    acks: list[CommandAck] = []
    node.create_subscription(
        Heartbeat,
        '/fleet/site_a/zone_1/heartbeat',
        lambda m: beats.__setitem__(m.agent_id, time.monotonic()),
        qos.HEARTBEAT,
    )
    node.create_subscription(Odometry, '/site_a/h_r2/odom', odom.append, qos.TELEMETRY)
    node.create_subscription(CommandAck, '/fleet/site_a/zone_1/ack', acks.append, qos.ACK)
    faults = node.create_publisher(String, FAULT_TOPIC, qos.EVENTS)
    commands = node.create_publisher(CommandMsg, '/site_a/h_r1/command', qos.COMMAND)
    host = _host(processes, tmp_path)
    ros.spin_until(lambda: len(beats) == 2 and odom, 30, 'heartbeats from both robots and odometry')
    assert odom[-1].header.frame_id == 'site_a_map' and odom[-1].child_frame_id == 'h_r2/base_link'

    ros.spin_until(lambda: faults.get_subscription_count() > 0, 10, 'the host to follow the fault topic')
    faults.publish(String(data=Fault('cut', agents=('h_r1',), duration_sec=2.5).to_json()))
    cut_at = time.monotonic()
    ros.spin_until(lambda: beats['h_r2'] - beats['h_r1'] > 1.2, 10, 'h_r1 to fall silent while h_r2 beats on')
    assert beats['h_r2'] > cut_at, 'the cut must not touch the other robot'
    ros.spin_until(lambda: beats['h_r1'] > cut_at + 2.5, 10, 'h_r1 to come back when the cut ends')

    now = time.time()
    cmd = Command(
        'cmd-1',
        'tr',
        'site_a',
        'zone_1',
        'h_r1',
        5,
        1,
        Priority.NORMAL,
        now,
        now + 30,
        'report',
        json.dumps({'point_id': 'p'}),
    )
    ros.spin_until(lambda: commands.get_subscription_count() > 0, 10, 'the robot to follow its command topic')
    commands.publish(command_to_msg(cmd))

    def final(command_id: str) -> list[CommandAck]:
        return [a for a in acks if a.command_id == command_id and a.final]

    ros.spin_until(lambda: final('cmd-1'), 10, 'the report to succeed')
    assert final('cmd-1')[0].status == AckStatus.SUCCEEDED

    host.kill()  # a crash; the store directory survives
    acks.clear()
    restarted_at = time.monotonic()
    _host(processes, tmp_path)
    ros.spin_until(lambda: beats['h_r1'] > restarted_at, 30, 'heartbeats from the restarted host')
    # Redeliver like the dispatcher does (same command, attempt + 1, again until a final ack): the new process
    # may not be matched on the command topic yet.
    redelivery = cmd
    for _ in range(10):
        redelivery = redelivery.next_attempt()
        commands.publish(command_to_msg(redelivery))
        try:
            ros.spin_until(lambda: final('cmd-1'), 1.0, 'the stored outcome of the redelivered command')
            break
        except WaitTimeout:
            continue
    assert final('cmd-1')[0].status == AckStatus.SUCCEEDED
    execution = audit([tmp_path / 'exec-h.jsonl'], tolerance_sec=0.25)
    assert execution.executions == 1 and execution.duplicates_executed == 0
