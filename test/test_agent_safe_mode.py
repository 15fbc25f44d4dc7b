"""A damaged WAL never leads to a second execution, end to end: ten agents of one host run long commands, the host
is killed, the last transaction of its store's WAL is damaged (SQLite then silently drops it: the store forgets
those starts), and the host restarts. The re-delivered commands are never run again; the agents whose starts were
lost report SAFE MODE (heartbeat state and reason) until `fleet_agent_store clear-safe-mode` is run, after which
they take work again."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from fleet_core import topics
from fleet_interfaces.msg import CommandOutcomes, Heartbeat, LeaderLease, ShardStatus
from fleet_interfaces.srv import SubmitCommand
from fleet_ros import qos
from fleet_ros.convert import from_time
from harness.exec_log import read_log
from harness.outcomes import first_outcomes

pytestmark = pytest.mark.system

TEST_DIR = Path(__file__).resolve().parent
SITE, SHARD = 'site_sm', 'zone_sm'
AGENTS = [f'r{i:02d}' for i in range(1, 11)]


def damage_last_wal_frame(store: Path) -> None:
    """Flip bytes in the last frame (a commit frame): SQLite ignores that whole transaction at the next open."""
    wal = Path(f'{store}-wal')
    data = bytearray(wal.read_bytes())
    page_size = int.from_bytes(data[8:12], 'big')
    frames = (len(data) - 32) // (24 + page_size)
    assert frames >= 1, 'nothing in the WAL to damage'
    offset = 32 + (frames - 1) * (24 + page_size) + 24 + page_size // 2
    data[offset : offset + 16] = bytes(b ^ 0xFF for b in data[offset : offset + 16])
    wal.write_bytes(bytes(data))


def test_damaged_wal_after_a_crash_runs_nothing_twice_and_reports_safe_mode(ros, processes, tmp_path):
    config = tmp_path / 'fleet.yaml'
    config.write_text(
        yaml.safe_dump(
            {
                'sites': {SITE: {'shards': {SHARD: {'agents': AGENTS}}}},
                'leadership': {'first_lease_wait_sec': 1.0},
                'dispatch': {'retry_initial_sec': 0.3, 'retry_max_sec': 1.0, 'retry_budget': 30},
            }
        )
    )
    stores, log = tmp_path / 'stores', tmp_path / 'exec.log'
    store = stores / 'agent_host.sqlite'
    common = ['--ros-args', '-p', f'fleet_config:={config}', '-p', f'site_id:={SITE}', '-p', f'shard_id:={SHARD}']
    agent_argv = [
        'fleet_agent',
        *common,
        '-p',
        f'store_dir:={stores}',
        '-p',
        'executor:=harness.exec_log:factory',
        '-p',
        'exec_delay_sec:=60.0',
    ]
    agent_env = {'FLEET_TEST_EXEC_LOG': str(log), 'PYTHONPATH': f'{TEST_DIR}:{os.environ.get("PYTHONPATH", "")}'}

    node = ros.node('safe_mode_test')
    outcomes: dict[str, int] = {}
    beats: dict[str, Heartbeat] = {}
    leases: list[LeaderLease] = []
    node.create_subscription(CommandOutcomes, topics.shard_outcome(SITE, SHARD), first_outcomes(outcomes), qos.EVENTS)
    node.create_subscription(
        Heartbeat, topics.shard_heartbeat(SITE, SHARD), lambda m: beats.__setitem__(m.agent_id, m), qos.HEARTBEAT
    )
    node.create_subscription(LeaderLease, topics.shard_leader(SITE, SHARD), leases.append, qos.LATCHED)
    statuses: list[ShardStatus] = []
    node.create_subscription(ShardStatus, topics.shard_status(SITE, SHARD), statuses.append, qos.LATCHED)
    client = node.create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))
    processes.start(['shard_orchestrator', *common], name='orchestrator')
    host = processes.start(agent_argv, name='agents', extra_env=agent_env)
    ros.spin_until(lambda: client.service_is_ready() and leases and len(beats) == len(AGENTS), 40, 'leader and agents')

    def submit(ttl: float) -> list[str]:
        request = SubmitCommand.Request(kind='noop', args_json='{}', priority=1, ttl_sec=ttl)
        reply = ros.submit(client, request)
        assert reply.accepted, reply.error
        return list(reply.command_ids)

    running = submit(ttl=60.0)  # one long command per agent of the shard
    ros.spin_until(lambda: len(read_log(log)) == len(AGENTS), 30, 'all ten commands executing')
    host.kill()  # the crash: the store's WAL is left as it was, not checkpointed
    damage_last_wal_frame(store)

    def fresh_beats(since: float) -> bool:
        return len(beats) == len(AGENTS) and all(from_time(b.stamp) > since for b in beats.values())

    restarted_at = time.time()
    host = processes.start(agent_argv, name='agents-restarted', extra_env=agent_env)
    ros.spin_until(lambda: all(c in outcomes for c in running), 60, 'an outcome for every interrupted command')
    executions = Counter(e['command_id'] for e in read_log(log))
    assert set(executions) == set(running) and set(executions.values()) == {1}, executions
    ros.spin_until(lambda: fresh_beats(restarted_at), 10, 'heartbeats after the restart')
    in_safe_mode = {a for a, b in beats.items() if b.state == Heartbeat.STATE_SAFE_MODE}
    assert in_safe_mode, 'the damaged WAL cost no start: nothing was tested'
    assert all('clear-safe-mode' in beats[a].safe_mode_reason for a in in_safe_mode)
    assert all(not beats[a].safe_mode_reason for a in set(AGENTS) - in_safe_mode)
    # The shard counts them (ShardStatus, shown by fleetctl status).
    ros.spin_until(
        lambda: statuses and statuses[-1].safe_mode_agents == len(in_safe_mode), 10, 'the safe-mode count in status'
    )
    shown = subprocess.run(
        ['fleetctl', '--config', str(config), 'status', '--json'],
        capture_output=True,
        text=True,
        timeout=60,
        env=processes.env,
    )
    rows = [json.loads(line) for line in shown.stdout.splitlines() if line.startswith('{')]
    assert [r.get('safe_mode_agents') for r in rows] == [len(in_safe_mode)], shown.stdout + shown.stderr

    host.stop()
    done = subprocess.run(
        ['fleet_agent_store', 'clear-safe-mode', str(store)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('recorded FAILED') == len(in_safe_mode)
    cleared_at = time.time()
    processes.start([*agent_argv[:-2], '-p', 'exec_delay_sec:=0.0'], name='agents-cleared', extra_env=agent_env)
    ros.spin_until(lambda: fresh_beats(cleared_at), 20, 'heartbeats after clearing')
    assert not any(b.state == Heartbeat.STATE_SAFE_MODE for b in beats.values())
    ros.spin_until(lambda: statuses[-1].safe_mode_agents == 0, 10, 'no safe-mode agent left in status')
    fresh = submit(ttl=20.0)
    ros.spin_until(lambda: all(c in outcomes for c in fresh), 40, 'outcomes of new work')
    assert {outcomes[c] for c in fresh} == {0}  # SUCCEEDED
    executions = Counter(e['command_id'] for e in read_log(log))
    assert set(executions.values()) == {1}
