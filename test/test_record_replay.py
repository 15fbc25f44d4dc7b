"""An incident reproduced offline: record a live shard (orchestrator + agents) with `fleetctl record`, then
`fleetctl replay` runs the recorded submissions and acks through the pure dispatcher and must decide the same."""

from __future__ import annotations

import subprocess

import pytest
from test_command_path import SHARD, SITE, ros_params, start_agents, write_config

from fleet_core import topics
from fleet_interfaces.msg import CommandOutcome, LeaderLease
from fleet_interfaces.srv import SubmitCommand
from fleet_ros import qos
from harness.processes import wait_exit

pytestmark = pytest.mark.system


def test_recorded_shard_replays_with_matching_decisions(ros, processes, tmp_path):
    config = write_config(tmp_path, agents=4)
    processes.start(['shard_orchestrator', *ros_params(config, retry_jitter_seed=7)], name='orchestrator')
    start_agents(processes, config, tmp_path / 'stores', tmp_path / 'exec.log', delay=0.05)
    node = ros.node('replay_probe')
    leases: list[LeaderLease] = []
    outcomes: dict[str, int] = {}
    node.create_subscription(LeaderLease, topics.shard_leader(SITE, SHARD), leases.append, qos.LATCHED)
    node.create_subscription(
        CommandOutcome,
        topics.shard_outcome(SITE, SHARD),
        lambda m: outcomes.setdefault(m.command_id, m.outcome),
        qos.EVENTS,
    )
    client = node.create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))
    ros.spin_until(lambda: client.service_is_ready() and leases, 30, 'a leading orchestrator')

    recording = tmp_path / 'shard.mcap'
    recorder = processes.start(
        ['fleetctl', '--config', str(config), 'record', '-o', str(recording), '--discovery-period', '0.2'],
        name='recorder',
    )
    journal = topics.shard_journal(SITE, SHARD)
    ros.spin_until(lambda: node.count_subscribers(journal) >= 1, 30, 'the recorder following the journal')
    ros.spin_until(lambda: node.count_subscribers(topics.shard_ack(SITE, SHARD)) >= 2, 30, 'the recorder on the acks')
    commands = [topics.agent_command(SITE, f'r{i:03d}') for i in range(1, 5)]
    ros.spin_until(lambda: all(node.count_subscribers(t) >= 2 for t in commands), 30, 'the recorder on every command')

    submitted: list[str] = []
    for kind, args in (('noop', '{}'), ('goto', '{"x": 1.0, "y": 2.0}'), ('sleep', '{"duration_sec": 0.1}')):
        future = client.call_async(SubmitCommand.Request(kind=kind, args_json=args, priority=1, ttl_sec=10.0))
        ros.spin_until(future.done, 10, 'the submit reply')
        assert future.result().accepted, future.result().error
        submitted += list(future.result().command_ids)
    ros.spin_until(lambda: all(c in outcomes for c in submitted), 30, 'every outcome')
    recorder.stop()
    assert wait_exit(recorder, 10) is not None and recording.exists()

    replay = subprocess.run(
        ['fleetctl', '--config', str(config), 'replay', str(recording), '--seed', '7'],
        capture_output=True,
        text=True,
        timeout=120,
        env=processes.env,
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert str(len(submitted)) in replay.stdout
