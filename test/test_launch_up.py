"""`fleetctl up --sim`: the node set comes up (a leader leads, every robot beats) and Ctrl-C stops every child."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from fleet_interfaces.msg import Heartbeat, LeaderLease
from fleet_ros import qos
from harness.processes import wait_exit
from harness.wait import wait_for

pytestmark = pytest.mark.system


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; /proc says so.
    try:
        return Path(f'/proc/{pid}/stat').read_text().split(') ')[1][0] != 'Z'
    except (OSError, IndexError):
        return False


def test_up_starts_the_node_set_and_ctrl_c_stops_it(ros: Any, processes: Any, tmp_path: Path) -> None:
    config = tmp_path / 'fleet.yaml'
    config.write_text('sites: {site_a: {shards: {zone_1: {agents: {prefix: u_r, count: 3}}}}}\n')
    ready = tmp_path / 'ready.json'
    node = ros.node('up_probe')
    leases: list[LeaderLease] = []
    beats: set[str] = set()
    node.create_subscription(LeaderLease, '/fleet/site_a/zone_1/leader', leases.append, qos.LATCHED)
    node.create_subscription(
        Heartbeat, '/fleet/site_a/zone_1/heartbeat', lambda m: beats.add(m.agent_id), qos.HEARTBEAT
    )
    up = processes.start(
        [
            'fleetctl',
            'up',
            str(config),
            '--sim',
            '--no-gateway',
            '--no-foxglove',
            '--state-dir',
            str(tmp_path / 's'),
            '--log-dir',
            str(tmp_path / 'logs'),
            '--ready-file',
            str(ready),
        ],
        name='fleetctl_up',
    )
    wait_for(ready.exists, 30, what='fleetctl up to start its processes')
    pids = json.loads(ready.read_text())['pids']
    assert sorted(pids) == ['orchestrator/site_a/zone_1', 'sim_host/site_a_zone_1', 'standby/site_a/zone_1']
    ros.spin_until(lambda: leases and len(beats) == 3, 60, 'a leader and heartbeats from all 3 robots')
    assert leases[-1].leader_id in ('site_a.zone_1.a', 'site_a.zone_1.b')

    up.signal(signal.SIGINT)
    assert wait_exit(up, 30) == 0, up.output()
    wait_for(lambda: not any(_alive(pid) for pid in pids.values()), 15, what='every child of fleetctl up to exit')
