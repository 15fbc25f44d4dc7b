"""Pause enforced at the agent, end to end: after `fleetctl operation pause` a NORMAL `fleetctl submit` is refused
by the paused agent (outcome REJECTED, naming the pause) and never reaches its executor, a HIGH one still runs, and
after `fleetctl operation resume` a NORMAL one runs again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from fleet_core import topics
from fleet_interfaces.msg import Heartbeat, ShardStatus
from fleet_ros import qos
from harness.exec_log import read_log

pytestmark = pytest.mark.system

TEST_DIR = Path(__file__).resolve().parent
SITE, SHARD, AGENT = 'site_p', 'zone_p', 'r1'


def test_paused_agent_refuses_normal_work_until_resumed(ros, processes, tmp_path):
    config = tmp_path / 'fleet.yaml'
    config.write_text(
        yaml.safe_dump(
            {
                'sites': {SITE: {'shards': {SHARD: {'agents': [AGENT]}}}},
                'leadership': {'first_lease_wait_sec': 1.0},
                'operations': {'wave_size': 1, 'wave_interval_sec': 0.1, 'lead_time_sec': 0.2},
            }
        )
    )
    log = tmp_path / 'exec.log'
    node = ros.node('agent_pause_test')
    beats: list[Heartbeat] = []
    statuses: list[ShardStatus] = []
    node.create_subscription(Heartbeat, topics.shard_heartbeat(SITE, SHARD), beats.append, qos.HEARTBEAT)
    node.create_subscription(ShardStatus, topics.shard_status(SITE, SHARD), statuses.append, qos.LATCHED)
    common = ['--ros-args', '-p', f'fleet_config:={config}', '-p', f'site_id:={SITE}', '-p', f'shard_id:={SHARD}']
    processes.start(['shard_orchestrator', *common], name='orchestrator')
    processes.start(
        ['fleet_agent', *common, '-p', f'store_dir:={tmp_path / "st"}', '-p', 'executor:=harness.exec_log:factory'],
        name='agent',
        extra_env={'FLEET_TEST_EXEC_LOG': str(log), 'PYTHONPATH': f'{TEST_DIR}:{os.environ.get("PYTHONPATH", "")}'},
    )
    ros.spin_until(lambda: beats and any(s.leader_id for s in statuses), 40.0, 'the agent and a leader')

    def fleetctl(*args: str) -> tuple[int, str]:
        proc = processes.start(['fleetctl', '--config', str(config), *args], name='fleetctl')
        code = ros.spin_until(lambda: not proc.alive() and (proc.popen.returncode,), 60.0, f'fleetctl {args[0]}')[0]
        return code, proc.output()

    def submit(priority: str) -> tuple[int, dict[str, object]]:
        code, out = fleetctl('submit', '--agents', AGENT, '--kind', 'noop', '--priority', priority, '--json')
        rows = [json.loads(line) for line in out.splitlines() if line.startswith('{')]
        assert len(rows) == 1, out
        return code, rows[0]

    def state_is(state: int) -> bool:
        return bool(beats) and beats[-1].state == state

    code, out = fleetctl('operation', 'pause', '--site', SITE)
    assert code == 0, out
    ros.spin_until(lambda: state_is(Heartbeat.STATE_PAUSED), 20.0, 'the agent PAUSED')

    code, refused = submit('NORMAL')
    assert code != 0
    assert refused['outcome'] == 'REJECTED' and 'paused' in str(refused['detail']), refused
    assert read_log(log) == []  # the executor never saw it

    code, high = submit('HIGH')
    assert code == 0 and high['outcome'] == 'SUCCEEDED', high
    assert [e['command_id'] for e in read_log(log)] == [high['command_id']]

    code, out = fleetctl('operation', 'resume', '--site', SITE)
    assert code == 0, out
    ros.spin_until(lambda: state_is(Heartbeat.STATE_IDLE), 20.0, 'the agent IDLE again')

    code, normal = submit('NORMAL')
    assert code == 0 and normal['outcome'] == 'SUCCEEDED', normal
    assert [e['command_id'] for e in read_log(log)] == [high['command_id'], normal['command_id']]
