"""The lifecycle supervisor brings a site's shard orchestrators up in order, restarts one that died and takes them
down in reverse; an orchestrator started for the wrong shard refuses to run (non-zero exit, clear message)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import yaml

from fleet_core import topics
from fleet_core.leadership import EPOCH_SLOTS
from fleet_interfaces.msg import Heartbeat, LeaderLease
from fleet_ros import qos
from harness.processes import wait_exit

pytestmark = pytest.mark.system

SITE = 'site_a'


@pytest.fixture
def fleet_config(tmp_path: Path) -> Path:
    path = tmp_path / 'fleet.yaml'
    shards = {'zone_1': {'agents': ['r1', 'r2']}, 'zone_2': {'agents': ['r3', 'r4']}}
    path.write_text(yaml.safe_dump({'sites': {SITE: {'shards': shards}}, 'leadership': {'first_lease_wait_sec': 1.0}}))
    return path


def leases_of(ros, node) -> dict[str, list[LeaderLease]]:
    seen: dict[str, list[LeaderLease]] = {'zone_1': [], 'zone_2': []}
    for shard, found in seen.items():
        node.create_subscription(LeaderLease, topics.shard_leader(SITE, shard), found.append, qos.LATCHED)
    return seen


def test_supervisor_brings_up_in_order_restarts_a_dead_node_and_brings_down_in_reverse(
    ros, processes, fleet_config, tmp_path
):
    node = ros.node('supervisor_test')
    leases = leases_of(ros, node)
    supervisor = processes.start(
        ['fleet_supervisor', '--ros-args', '-p', f'fleet_config:={fleet_config}', '-p', f'site_id:={SITE}',
         '-p', 'spawn:=true', '-p', 'check_period_sec:=0.5', '-p', 'missed_checks_restart:=2'],
        name='supervisor',
    )  # fmt: skip
    ros.spin_until(lambda: leases['zone_1'] and leases['zone_2'], 60.0, 'a leader in both shards')
    ros.spin_until(lambda: '2 node(s) ACTIVE' in supervisor.output(), 30.0, 'the supervisor bring-up')
    log = supervisor.output()
    assert log.index('zone_1/orchestrator_0: ACTIVE') < log.index('zone_2/orchestrator_0: ACTIVE')
    # zone_2's agents remember the epoch they saw (heartbeats), so a replacement leader must go above it.
    processes.start(
        ['fleet_agent', '--ros-args', '-p', f'fleet_config:={fleet_config}', '-p', f'site_id:={SITE}',
         '-p', 'shard_id:=zone_2', '-p', f'store_dir:={tmp_path / "agents"}'],
        name='agents',
    )  # fmt: skip
    heartbeats: list[Heartbeat] = []
    node.create_subscription(Heartbeat, topics.shard_heartbeat(SITE, 'zone_2'), heartbeats.append, qos.HEARTBEAT)
    ros.spin_until(lambda: any(h.highest_epoch_seen >= 1 for h in heartbeats), 30.0, 'agents that saw epoch 1')

    # The leader id is host-pid: kill the zone_2 orchestrator the supervisor spawned (a crash).
    first = leases['zone_2'][-1]
    pid = int(first.leader_id.rsplit('-', 1)[1])
    os.kill(pid, signal.SIGKILL)
    ros.spin_until(lambda: any(m.leader_id != first.leader_id for m in leases['zone_2']), 60.0, 'a restarted leader')
    assert re.search(r'zone_2/orchestrator_0: exited with code -9; restarting', supervisor.output())
    restarted = next(m for m in leases['zone_2'] if m.leader_id != first.leader_id)
    # The replacement fenced the dead leader's epoch, with the next epoch of the same replica slot (replica_index 0).
    assert restarted.epoch > first.epoch and restarted.epoch % EPOCH_SLOTS == first.epoch % EPOCH_SLOTS == 0

    supervisor.signal(signal.SIGINT)
    assert wait_exit(supervisor, 30.0) == 0
    log = supervisor.output()
    assert log.index('zone_2/orchestrator_0: brought down') < log.index('zone_1/orchestrator_0: brought down')


def test_orchestrator_with_the_wrong_shard_refuses_to_run(ros, processes, fleet_config):
    node = ros.node('wrong_shard_test')
    leases = leases_of(ros, node)
    base = ['shard_orchestrator', '--ros-args', '-p', f'fleet_config:={fleet_config}', '-p', f'site_id:={SITE}']
    z1 = processes.start([*base, '-p', 'shard_id:=zone_1', '-p', 'orchestrator_id:=z1'], name='z1')
    ros.spin_until(lambda: leases['zone_1'], 30.0, 'the zone_1 leader')
    # Namespace says zone_1, parameter says zone_2: refused at configure.
    in_ns = processes.start([*base, '-p', 'shard_id:=zone_2', '-r', '__ns:=/fleet/site_a/zone_1'], name='ns')
    assert wait_exit(in_ns, 30.0) == 2
    assert 'belongs to another shard' in in_ns.output()
    # Wired to zone_1's lease topic while configured for zone_2: refused at configure, and zone_1's leader lives on.
    remapped = processes.start(
        [*base, '-p', 'shard_id:=zone_2', '-r', '/fleet/site_a/zone_2/leader:=/fleet/site_a/zone_1/leader'],
        name='remapped',
    )
    assert wait_exit(remapped, 30.0) == 2
    assert 'wired to another shard' in remapped.output()
    assert z1.alive() and 'foreign lease' not in z1.output()
