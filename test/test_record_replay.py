"""An incident reproduced offline: record a live shard (orchestrator + agents) with `fleetctl record`, then
`fleetctl replay` runs the recorded submissions and acks through the pure dispatcher and must decide the same."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from test_command_path import SHARD, SITE, ros_params, start_agents, write_config

from fleet_core import topics
from fleet_interfaces.msg import CommandOutcomes, LeaderLease, ShardStatus
from fleet_interfaces.srv import SubmitCommand
from fleet_ros import qos
from harness.outcomes import first_outcomes
from harness.processes import wait_exit

pytestmark = pytest.mark.system
REPO = Path(__file__).resolve().parents[1]


def settle_then_stop(ros, node, recorder) -> None:
    """The recorder reads the same reliable streams as this probe; two more periodic shard statuses (about a
    second of traffic) after the last outcome leave it ample time before it is stopped."""
    statuses: list[ShardStatus] = []
    node.create_subscription(ShardStatus, topics.shard_status(SITE, SHARD), statuses.append, qos.LATCHED)
    ros.spin_until(lambda: len(statuses) >= 3, 10, 'two more shard statuses')
    recorder.stop()
    wait_exit(recorder, 10)


def replay(config, recording, seed: int, env) -> subprocess.CompletedProcess[str]:
    """`fleetctl replay` of a recording with the jitter seed of the recorded run; asserts it exits 0."""
    done = subprocess.run(
        ['fleetctl', '--config', str(config), 'replay', str(recording), '--seed', str(seed)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def outcomes_compared(stdout: str) -> tuple[int, int]:
    """(matched, commands) from the replay's `outcomes M/N match` line; fails when the line is missing."""
    found = re.findall(r'outcomes (\d+)/(\d+) match', stdout)
    assert len(found) == 1, stdout  # one shard was recorded
    assert 'replay: all decisions match' in stdout, stdout
    return int(found[0][0]), int(found[0][1])


def test_recorded_shard_replays_with_matching_decisions(ros, processes, tmp_path):
    config = write_config(tmp_path, agents=4)
    processes.start(['shard_orchestrator', *ros_params(config, retry_jitter_seed=7)], name='orchestrator')
    start_agents(processes, config, tmp_path / 'stores', tmp_path / 'exec.log', delay=0.05)
    node = ros.node('replay_probe')
    leases: list[LeaderLease] = []
    outcomes: dict[str, int] = {}
    node.create_subscription(LeaderLease, topics.shard_leader(SITE, SHARD), leases.append, qos.LATCHED)
    node.create_subscription(CommandOutcomes, topics.shard_outcome(SITE, SHARD), first_outcomes(outcomes), qos.EVENTS)
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
        reply = ros.submit(client, SubmitCommand.Request(kind=kind, args_json=args, priority=1, ttl_sec=10.0))
        assert reply.accepted, reply.error
        submitted += list(reply.command_ids)
    ros.spin_until(lambda: all(c in outcomes for c in submitted), 30, 'every outcome')
    settle_then_stop(ros, node, recorder)
    assert recording.exists()

    replayed = replay(config, recording, 7, processes.env)
    # every submitted command (3 submissions x 4 agents) was recorded, replayed and decided the same
    assert outcomes_compared(replayed.stdout) == (len(submitted), len(submitted)) == (12, 12), replayed.stdout


def test_recorded_mission_replays_with_matching_decisions(ros, processes, tmp_path):
    config = write_config(tmp_path, agents=4)
    workflows = REPO / 'config' / 'workflows'
    (tmp_path / 'workflows').symlink_to(workflows)
    processes.start(['shard_orchestrator', *ros_params(config, retry_jitter_seed=11)], name='orchestrator')
    start_agents(processes, config, tmp_path / 'stores', tmp_path / 'exec.log', delay=0.02)
    node = ros.node('mission_replay_probe')
    leases: list[LeaderLease] = []
    node.create_subscription(LeaderLease, topics.shard_leader(SITE, SHARD), leases.append, qos.LATCHED)
    ros.spin_until(lambda: leases, 30, 'a leading orchestrator')

    recording = tmp_path / 'mission.mcap'
    record = ['fleetctl', '--config', str(config), 'record', '-o', str(recording), '--discovery-period', '0.2']
    recorder = processes.start(record, name='recorder')
    commands = [topics.agent_command(SITE, f'r{i:03d}') for i in range(1, 5)]
    watched = [topics.shard_journal(SITE, SHARD), topics.shard_ack(SITE, SHARD), *commands]
    ros.spin_until(lambda: all(node.count_subscribers(t) >= 2 for t in watched[1:]), 30, 'the recorder subscribed')
    ros.spin_until(lambda: node.count_subscribers(watched[0]) >= 1, 30, 'the recorder on the journal')

    mission = subprocess.run(
        ['fleetctl', '--config', str(config), 'mission', 'start', 'inspection', '--site', SITE, '--points', '8'],
        capture_output=True,
        text=True,
        timeout=180,
        env=processes.env,
    )
    assert mission.returncode == 0, mission.stdout + mission.stderr
    settle_then_stop(ros, node, recorder)

    replayed = replay(config, recording, 11, processes.env)
    matched, compared = outcomes_compared(replayed.stdout)
    # undock + per point goto/inspect/report + return + dock, over 4 robots: dozens of decisions compared
    assert matched == compared >= 8 * 3, replayed.stdout
