"""Degradation obeyed by a real agent: the level the shard's leader announces in ShardStatus reaches the executor
plug-in (ExecutorContext.degradation_level and the telemetry period derived from it) and the heartbeat the agent
relays, and follows the level back down."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from fleet_core import topics
from fleet_core.model import Command, Priority
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandAck, Heartbeat, ShardStatus
from fleet_ros import qos
from fleet_ros.convert import command_to_msg

pytestmark = pytest.mark.system

TEST_DIR = Path(__file__).resolve().parent
SITE, SHARD, AGENT = 'site_dg', 'zone_dg', 'r1'


def test_the_shard_degradation_level_reaches_executor_plugins_and_heartbeats(ros, processes, tmp_path):
    config = tmp_path / 'fleet.yaml'
    config.write_text(
        yaml.safe_dump(
            {
                'sites': {SITE: {'shards': {SHARD: {'agents': [AGENT]}}}},
                'degradation': {'telemetry_factor': [1.0, 0.5, 0.1]},
            }
        )
    )
    node = ros.node('agent_degradation_test')
    beats: list[Heartbeat] = []
    acks: dict[str, CommandAck] = {}
    node.create_subscription(Heartbeat, topics.shard_heartbeat(SITE, SHARD), beats.append, qos.HEARTBEAT)
    node.create_subscription(
        CommandAck, topics.shard_ack(SITE, SHARD), lambda m: m.final and acks.setdefault(m.command_id, m), qos.ACK
    )
    # This test stands in for the shard's leader: it announces the level and sends the commands.
    status_pub = node.create_publisher(ShardStatus, topics.shard_status(SITE, SHARD), qos.LATCHED)
    command_pub = node.create_publisher(CommandMsg, topics.agent_command(SITE, AGENT), qos.COMMAND)
    processes.start(
        [
            'fleet_agent',
            '--ros-args',
            '-p',
            f'fleet_config:={config}',
            '-p',
            f'site_id:={SITE}',
            '-p',
            f'shard_id:={SHARD}',
            '-p',
            f'store_dir:={tmp_path / "st"}',
            '-p',
            'executor:=harness.level_executor:factory',
        ],
        name='agent',
        extra_env={'PYTHONPATH': f'{TEST_DIR}:{os.environ.get("PYTHONPATH", "")}'},
    )
    ros.spin_until(lambda: beats, 30.0, 'a heartbeat')
    assert beats[-1].degradation_level == 0

    def run_at(level: int, seq: int) -> str:
        status_pub.publish(
            ShardStatus(site_id=SITE, shard_id=SHARD, leader_id='test', epoch=1, degradation_level=level)
        )
        ros.spin_until(lambda: beats[-1].degradation_level == level, 10.0, f'a heartbeat at level {level}')
        now = time.time()
        command = Command(f'c{seq}', 't', SITE, SHARD, AGENT, seq, 1, Priority.NORMAL, now, now + 10.0, 'noop')
        command_pub.publish(command_to_msg(command))
        return ros.spin_until(
            lambda: acks.get(command.command_id), 10.0, f'the final ack of {command.command_id}'
        ).detail

    assert run_at(2, 1) == 'level=2 telemetry_period=1.000'  # 0.1 s nominal / 0.1
    assert run_at(1, 2) == 'level=1 telemetry_period=0.200'
    assert run_at(0, 3) == 'level=0 telemetry_period=0.100'
