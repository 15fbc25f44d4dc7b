"""launch/site_launch.py and robot_launch.py run for real (launch_pytest, by path): a site server with two shards and
three robot computers. Every orchestrator reaches ACTIVE, each shard has one leader, every robot beats, a command
goes round trip, and shutting the launch down (what SIGINT to `ros2 launch` does) leaves nothing running."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import ros2_tools

ros2_tools.require_module()

import launch_pytest  # noqa: E402

from harness.launch_system import (  # noqa: E402
    ACTIVE,
    LAUNCH_DIR,
    FleetProbe,
    descendants,
    fleetctl,
    free_port,
    in_this_domain,
    include,
    lifecycle_state,
    settle_on_one_leader,
    still_running,
    stop_tagged,
    tag_action,
    tagged,
    write_layout,
)
from harness.wait import wait_for  # noqa: E402
from launch import LaunchDescription  # noqa: E402

pytestmark = pytest.mark.system
BEFORE: dict[int, str] = {}
TAG = f'site-{os.getpid()}'

SITE = 'site_a'
SHARDS = {'zone_1': ['ls_r1', 'ls_r2'], 'zone_2': ['ls_r3']}
ROLES = {'orchestrator': f'{SITE}.{{shard}}.a', 'standby': f'{SITE}.{{shard}}.b'}
GATEWAY_PORT, FOXGLOVE_PORT = free_port(), free_port()
# pids the launch started, taken while it runs, checked after its shutdown
STARTED: dict[int, str] = {}


@pytest.fixture(scope='module')
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_layout(tmp_path_factory.mktemp('site') / 'fleet.yaml', SITE, SHARDS)


@ros2_tools.launch_fixture(scope='module')
def site_and_robots(layout: Path) -> LaunchDescription:
    BEFORE.update(in_this_domain())  # other tests' processes are theirs to answer for
    entities = [
        tag_action(TAG),
        include(
            LAUNCH_DIR / 'site_launch.py',
            fleet_config=str(layout),
            site=SITE,
            gateway_port=str(GATEWAY_PORT),
            foxglove_port=str(FOXGLOVE_PORT),
        ),
    ]
    for agents in SHARDS.values():
        for agent in agents:
            store = layout.parent / 'stores' / agent
            entities.append(
                include(LAUNCH_DIR / 'robot_launch.py', fleet_config=str(layout), agent_id=agent, store_dir=str(store))
            )
    return LaunchDescription([*entities, launch_pytest.actions.ReadyToTest()])


@pytest.fixture(scope='module', autouse=True)
def _stop_leftovers() -> Iterator[None]:
    """Whatever the tests' outcome, nothing this module launched outlives it."""
    yield
    stop_tagged(TAG)


@pytest.fixture
def probe(ros: Any) -> FleetProbe:
    return FleetProbe(ros.node('launch_site_probe'), SITE, list(SHARDS))


@pytest.mark.launch(fixture=site_and_robots)
def test_every_node_reaches_its_state(ros: Any, probe: FleetProbe) -> None:
    expected = 2 * len(SHARDS) + sum(len(a) for a in SHARDS.values()) + 2
    launched = wait_for(
        lambda: (c := descendants(os.getpid(), recursive=False)) and len(c) >= expected and c,
        60,
        what=f'{expected} launched processes',
    )
    # Every process below the launch (the gateway's workers too) must be gone after the shutdown test.
    STARTED.update(descendants(os.getpid()))
    executables = sorted(cmd.split(' --ros-args')[0].rsplit('/', 1)[-1] for cmd in launched.values())
    assert executables == ['fleet_agent'] * 3 + ['fleet_foxglove', 'fleet_gateway'] + ['shard_orchestrator'] * 4, (
        STARTED
    )

    for shard, agents in SHARDS.items():
        ros.spin_until(lambda s=shard, a=agents: probe.beats[s] >= set(a), 60, f'heartbeats of {agents}')
        for role in ROLES:
            state = lifecycle_state(ros, f'/{SITE}/{shard}/{role}', timeout=60)
            assert state == ACTIVE, f'{shard}/{role} is in lifecycle state {state}'
        ros.spin_until(lambda s=shard: probe.leader(s), 30, f'a lease on {shard}')
    # One leader per shard: each epoch is held by one of the shard's orchestrators, and the shard settles on one.
    settle_on_one_leader(ros, probe, {shard: {r.format(shard=shard) for r in ROLES.values()} for shard in SHARDS})


@pytest.mark.parametrize(('name', 'port'), [('gateway', GATEWAY_PORT), ('foxglove', FOXGLOVE_PORT)])
@pytest.mark.launch(fixture=site_and_robots)
def test_the_servers_are_site_nodes_on_the_launch_argument_ports(ros: Any, name: str, port: int) -> None:
    node = ros.node('launch_site_graph')
    ros.spin_until(lambda: (name, f'/{SITE}') in node.get_node_names_and_namespaces(), 60, f'the node /{SITE}/{name}')

    def listening() -> bool:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            return sock.connect_ex(('127.0.0.1', port)) == 0

    wait_for(listening, 60, interval=0.5, what=f'{name} to listen on 127.0.0.1:{port}')


@pytest.mark.launch(fixture=site_and_robots)
def test_a_command_goes_round_trip(layout: Path) -> None:
    agents = ','.join(a for agents in SHARDS.values() for a in agents)
    done = wait_for(
        lambda: (r := fleetctl(layout, 'submit', '--agents', agents, '--kind', 'noop', '--json')).returncode == 0 and r,
        60,
        interval=0.5,
        what='fleetctl submit to every robot to succeed',
    )
    assert done.stdout.count('SUCCEEDED') == 3, done.stdout


@pytest.mark.launch(fixture=site_and_robots, shutdown=True)
def test_shutdown_leaves_nothing_running() -> None:
    # launch_pytest has shut the launch down (the path SIGINT to `ros2 launch` takes) before this runs.
    assert STARTED, 'the state test did not record the launched processes'
    wait_for(lambda: not still_running(STARTED), 10, what='every launched process to exit')
    # Nothing the launch started survives either, however it detached (they carry the tag in their environment).
    assert not tagged(TAG), tagged(TAG)
    left = {pid: cmd for pid, cmd in in_this_domain().items() if pid not in BEFORE}
    assert not left, left
