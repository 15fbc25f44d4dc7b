"""The ros2 command line on a launched fleet, as a ROS developer uses it: a site server and two robot computers
(launched through the installed fleet_bringup share/, by package name), then `ros2 interface show`, `ros2 param
get/describe`, `ros2 topic echo --once` of a shard status, `ros2 service call` of the submit service and
`ros2 lifecycle get/set` on the orchestrators (a standby deactivated and activated again; the leader deactivated,
the standby taking over). Every verb runs with --no-daemon where it has one, and any ros2 daemon of the session's
domain is stopped at the end."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import ros2_tools

ros2_tools.require_module()

import launch_pytest  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402

from fleet_core import topics  # noqa: E402
from fleet_core.config import load_fleet_config  # noqa: E402
from fleet_interfaces.msg import CommandOutcome, CommandOutcomes  # noqa: E402
from fleet_ros import qos  # noqa: E402
from harness.launch_system import (  # noqa: E402
    FleetProbe,
    fleetctl,
    include,
    lapsed_before_another_led,
    one_leader_at_a_time,
    stop_tagged,
    tag_action,
    write_layout,
)
from harness.wait import WaitTimeout, wait_for  # noqa: E402
from launch import LaunchDescription  # noqa: E402

pytestmark = pytest.mark.system

SITE, SHARD = 'site_c', 'zone_1'
AGENTS = ['cli_r1', 'cli_r2']
NS = f'/{SITE}/{SHARD}'
LEADER_ID, STANDBY_ID = f'{SITE}.{SHARD}.a', f'{SITE}.{SHARD}.b'
TAG = f'cli-{os.getpid()}'
LEADER_AFTER_FAILOVER: list[str] = []


# The returncode of a ros2 verb stopped for giving no answer (as timeout(1) reports it).
NO_ANSWER = 124
NO_ANSWER_SEC = 30.0


def ros2(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`ros2 ARGS`, stopped after `timeout` seconds and then answered as NO_ANSWER. A verb that calls a service
    waits without a limit, first for the service to match and then for the reply. The service's middleware drops a
    reply whose reader it has not matched within 100 ms (rclpy warns "failed to send response (timeout)"), and a
    loaded machine shows it."""
    try:
        return subprocess.run(['ros2', *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    except subprocess.TimeoutExpired as expired:
        return subprocess.CompletedProcess(
            expired.cmd, NO_ANSWER, stdout='', stderr=f'ros2 {" ".join(args)}: no answer within {timeout:.0f}s'
        )


def ros2_node_verb(*args: str, took_effect: Callable[[], bool] | None = None) -> subprocess.CompletedProcess[str]:
    """`ros2 ARGS` for a verb addressing a node. With --no-daemon the CLI's own node discovers the graph for
    --spin-time seconds, and on a loaded machine that may not be enough: 'Node not found' (nothing was done) is asked
    again, for up to 90 s. So is a call that gives no answer within NO_ANSWER_SEC. For a verb that changes something,
    `took_effect` decides first whether the change was made and only the answer was lost."""
    if '--no-daemon' in args:
        args = (*args, '--spin-time', '2')
    answers: list[subprocess.CompletedProcess[str]] = []

    def answered() -> bool:
        answers.append(ros2(*args, timeout=NO_ANSWER_SEC))
        if answers[-1].returncode == NO_ANSWER:
            return took_effect is not None and took_effect()
        return 'Node not found' not in answers[-1].stderr

    with contextlib.suppress(WaitTimeout):
        wait_for(answered, 90, interval=0.5, what=f'ros2 {" ".join(args)} to find its node and answer')
    return answers[-1]


def ros2_ok(*args: str) -> str:
    """`ros2 ARGS`, which must succeed; its stdout."""
    done = ros2_node_verb(*args)
    assert done.returncode == 0, f'ros2 {" ".join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}'
    # Fast DDS writes its transport warnings (e.g. a shared-memory port lock held by another process) to stdout.
    return '\n'.join(line for line in done.stdout.splitlines() if 'RTPS_' not in line)


@pytest.fixture(scope='module')
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_layout(tmp_path_factory.mktemp('cli') / 'fleet.yaml', SITE, {SHARD: AGENTS})


@ros2_tools.launch_fixture(scope='module')
def fleet(layout: Path) -> LaunchDescription:
    share = Path(get_package_share_directory('fleet_bringup')) / 'launch'
    entities = [
        tag_action(TAG),
        include(share / 'site_launch.py', fleet_config=str(layout), gateway='false', foxglove='false'),
    ]
    for agent in AGENTS:
        store = layout.parent / 'stores' / agent
        entities.append(
            include(share / 'robot_launch.py', fleet_config=str(layout), agent_id=agent, store_dir=str(store))
        )
    return LaunchDescription([*entities, launch_pytest.actions.ReadyToTest()])


@pytest.fixture(scope='module', autouse=True)
def _cleanup() -> Iterator[None]:
    """Stop what the launch started and any ros2 daemon of this domain, whatever the tests' outcome."""
    yield
    ros2('daemon', 'stop', timeout=30)
    stop_tagged(TAG)


@pytest.fixture
def probe(ros: Any) -> FleetProbe:
    return FleetProbe(ros.node('ros2_cli_probe'), SITE, [SHARD])


def _up(ros: Any, probe: FleetProbe) -> None:
    ros.spin_until(lambda: probe.beats[SHARD] >= set(AGENTS), 90, f'heartbeats of {AGENTS}')
    ros.spin_until(lambda: probe.leader(SHARD), 60, 'a leader')


@pytest.mark.launch(fixture=fleet)
def test_interface_show() -> None:
    status = ros2_ok('interface', 'show', 'fleet_interfaces/msg/ShardStatus')
    assert re.search(r'^string leader_id\b', status, re.M) and re.search(r'^uint64 epoch\b', status, re.M), status
    submit = ros2_ok('interface', 'show', 'fleet_interfaces/srv/SubmitCommand')
    request, response = submit.split('\n---\n')
    assert re.search(r'^string kind\b', request, re.M) and re.search(r'^bool accepted\b', response, re.M), submit


@pytest.mark.launch(fixture=fleet)
def test_param_get_and_describe(ros: Any, probe: FleetProbe) -> None:
    _up(ros, probe)
    node = f'{NS}/orchestrator'
    assert ros2_ok('param', 'get', '--no-daemon', node, 'site_id').strip() == f'String value is: {SITE}'
    assert ros2_ok('param', 'get', '--no-daemon', node, 'shard_id').strip() == f'String value is: {SHARD}'
    described = ros2_ok('param', 'describe', '--no-daemon', node, 'site_id')
    assert re.search(r'Description: \S', described) and 'Type: string' in described, described
    agent = f'/{SITE}/{AGENTS[0]}/agent'
    assert ros2_ok('param', 'get', '--no-daemon', agent, 'executor').strip() == 'String value is: sleep'
    assert 'Description: ' in ros2_ok('param', 'describe', '--no-daemon', agent, 'executor')


def echo_status() -> str:
    """What a new subscriber is shown first on the shard's latched status topic."""
    return ros2_ok(
        'topic',
        'echo',
        '--once',
        '--no-daemon',
        '--qos-durability',
        'transient_local',
        '--qos-reliability',
        'reliable',
        topics.shard_status(SITE, SHARD),
        'fleet_interfaces/msg/ShardStatus',
    )


def echo_not_stale(ros: Any, probe: FleetProbe) -> str:
    """`ros2 topic echo --once` of the status shows the leader of the latest epoch known when it started (never an
    older leader's latched status), as the probe's leases confirm."""
    ros.spin_until(lambda: probe.leader(SHARD), 30, 'a lease')
    _, known_epoch = probe.leader(SHARD) or ('', 0)
    echoed = echo_status()
    leader = re.search(r'^leader_id: (\S+)$', echoed, re.M)
    epoch = re.search(r'^epoch: (\d+)$', echoed, re.M)
    assert leader and epoch, echoed
    assert int(epoch.group(1)) >= known_epoch, f'a stale leader (epoch {known_epoch} was known):\n{echoed}'
    echoed_epoch = int(epoch.group(1))
    leases = probe.leases[SHARD]
    ros.spin_until(lambda: any(lease.epoch >= echoed_epoch for lease in leases), 10, f'a lease of epoch {echoed_epoch}')
    holders = {lease.leader_id for lease in probe.leases[SHARD] if lease.epoch == echoed_epoch}
    assert holders == {leader.group(1)}, f'leases of that epoch name {holders}:\n{echoed}'
    return echoed


@pytest.mark.launch(fixture=fleet)
def test_param_describe_and_set_obey_read_only_and_ranges(ros: Any, probe: FleetProbe) -> None:
    _up(ros, probe)
    node = f'{NS}/orchestrator'
    described = ros2_ok('param', 'describe', '--no-daemon', node, 'site_id')
    assert 'Read only: true' in described, described
    described = ros2_ok('param', 'describe', '--no-daemon', node, 'trace_sample_fraction')
    assert re.search(r'Min value: -1\.0\s+Max value: 1\.0', described), described

    def set_param(name: str, value: str) -> subprocess.CompletedProcess[str]:
        done = ros2_node_verb('param', 'set', '--no-daemon', node, name, value)
        assert 'Node not found' not in done.stderr, done.stderr
        return done

    # Fixed at start: refused, and the value stays.
    refused = set_param('site_id', 'elsewhere')
    assert 'Setting parameter failed' in refused.stderr, refused
    assert ros2_ok('param', 'get', '--no-daemon', node, 'site_id').strip() == f'String value is: {SITE}'
    # Out of range: refused; in range: applied.
    assert 'Setting parameter failed' in set_param('trace_sample_fraction', '2.0').stderr
    assert 'Set parameter successful' in set_param('trace_sample_fraction', '0.5').stdout
    assert ros2_ok('param', 'get', '--no-daemon', node, 'trace_sample_fraction').strip() == 'Double value is: 0.5'


@pytest.mark.launch(fixture=fleet)
def test_topic_echo_once_shows_the_leaders_status(ros: Any, probe: FleetProbe) -> None:
    _up(ros, probe)
    echoed = echo_not_stale(ros, probe)
    assert f'site_id: {SITE}' in echoed and f'shard_id: {SHARD}' in echoed and 'agents_online: 2' in echoed, echoed


@pytest.mark.launch(fixture=fleet)
def test_service_call_submit_goes_round_trip(ros: Any, probe: FleetProbe) -> None:
    _up(ros, probe)
    outcomes: list[CommandOutcome] = []
    subscription = probe.node.create_subscription(
        CommandOutcomes, topics.shard_outcome(SITE, SHARD), lambda m: outcomes.extend(m.outcomes), qos.EVENTS
    )
    # Outcomes are events (volatile): a subscription the leader's outcome publisher has not matched yet misses the
    # one this command gets, which a loaded machine showed. Wait for the match before submitting.
    outcome_topic = topics.shard_outcome(SITE, SHARD)
    ros.spin_until(
        lambda: 0 < probe.node.count_publishers(outcome_topic) <= subscription.get_publisher_count(),
        30,
        'every outcome publisher in the graph to match',
    )
    request = f"{{agent_ids: ['{AGENTS[1]}'], kind: noop, args_json: '{{}}', priority: 1, ttl_sec: 30.0}}"
    answer = ros2_ok('service', 'call', topics.shard_submit(SITE, SHARD), 'fleet_interfaces/srv/SubmitCommand', request)
    assert 'accepted=True' in answer, answer
    command_ids = re.search(r"command_ids=\['([0-9a-f-]+)'\]", answer)
    assert command_ids, answer
    command_id = command_ids.group(1)
    done = ros.spin_until(
        lambda: [o for o in outcomes if o.command_id == command_id], 30, f'the outcome of {command_id}'
    )
    assert done[0].outcome == CommandOutcome.OUTCOME_SUCCEEDED and done[0].agent_id == AGENTS[1], done


@pytest.mark.launch(fixture=fleet)
def test_lifecycle_get_set_on_the_orchestrators(ros: Any, probe: FleetProbe, layout: Path) -> None:
    _up(ros, probe)
    leader_id, epoch = probe.leader(SHARD) or ('', 0)
    # Normally the orchestrator leads; a loaded machine may have failed over already: take the roles as they are.
    nodes = {LEADER_ID: f'{NS}/orchestrator', STANDBY_ID: f'{NS}/standby'}
    assert leader_id in nodes, leader_id
    standby_id = STANDBY_ID if leader_id == LEADER_ID else LEADER_ID
    orchestrator, standby = nodes[leader_id], nodes[standby_id]

    def state(node: str) -> str:
        return ros2_ok('lifecycle', 'get', '--no-daemon', node).strip()

    def transition(node: str, name: str, target: str) -> None:
        """`ros2 lifecycle set NODE NAME` answers 'Transitioning successful'; if its answer was lost, the node is in
        `target` all the same (asserted by the caller too)."""
        done = ros2_node_verb('lifecycle', 'set', '--no-daemon', node, name, took_effect=lambda: state(node) == target)
        assert 'Transitioning successful' in done.stdout or (done.returncode == NO_ANSWER and state(node) == target), (
            f'ros2 lifecycle set {node} {name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}'
        )

    assert state(orchestrator) == 'active [3]' and state(standby) == 'active [3]'
    # A standby deactivated and activated again is a hot standby again: the leader keeps leading meanwhile ...
    transition(standby, 'deactivate', 'inactive [2]')
    assert state(standby) == 'inactive [2]'
    transition(standby, 'activate', 'active [3]')
    assert state(standby) == 'active [3]'
    before = list(probe.leases[SHARD])
    probe.leases[SHARD].clear()
    ros.spin_until(lambda: len(probe.leases[SHARD]) >= 4, 30, 'four lease renewals')
    # A leader starved of CPU longer than its lease (the documented limit) may lose it meanwhile; the standby may then
    # lead, but never by taking a live lease.
    lapsed = lapsed_before_another_led(
        before + probe.leases[SHARD], leader_id, load_fleet_config(layout).leadership.lease_sec
    )
    assert not one_leader_at_a_time(probe.leases[SHARD], {leader_id, standby_id} if lapsed else {leader_id})
    # ... and takes over when the leader is deactivated, with a higher epoch; commands still go round trip.
    transition(orchestrator, 'deactivate', 'inactive [2]')
    assert state(orchestrator) == 'inactive [2]'
    ros.spin_until(lambda: (probe.leader(SHARD) or ('',))[0] == standby_id, 30, 'the standby to lead')
    assert (probe.leader(SHARD) or ('', 0))[1] > epoch
    done = wait_for(
        lambda: (r := fleetctl(layout, 'submit', '--agents', ','.join(AGENTS), '--kind', 'noop')).returncode == 0 and r,
        60,
        interval=0.5,
        what='fleetctl submit through the new leader',
    )
    assert done.returncode == 0
    # The old leader, activated again, does not take the lead back: one leader per shard.
    transition(orchestrator, 'activate', 'active [3]')
    assert state(orchestrator) == 'active [3]'
    probe.leases[SHARD].clear()
    ros.spin_until(lambda: len(probe.leases[SHARD]) >= 4, 30, 'four lease renewals')
    assert {lease.leader_id for lease in probe.leases[SHARD]} == {standby_id}
    LEADER_AFTER_FAILOVER.append(standby_id)


@pytest.mark.launch(fixture=fleet)
def test_topic_echo_after_the_failover_shows_only_the_new_leader(ros: Any, probe: FleetProbe) -> None:
    # Runs after the lifecycle test handed the lead to the standby: a new subscriber must never be shown the old
    # leader's latched status (both orchestrators publish on the topic; the stale one showed in about half the tries).
    assert LEADER_AFTER_FAILOVER, 'the lifecycle test did not fail over'
    for _ in range(3):
        echo_not_stale(ros, probe)
