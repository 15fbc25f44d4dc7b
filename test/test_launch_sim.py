"""`ros2 launch fleet_bringup sim_launch.py` (by package name, as a process of a launch_pytest launch) with a small
simulated fleet: every orchestrator reaches ACTIVE, each shard has one leader, every robot beats, a command goes
round trip, and SIGINT to `ros2 launch` stops every process it started within a few seconds, leaving nothing of
this session's ROS domain running and no file in the launch's temp directory."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import ros2_tools

ros2_tools.require_module()

import launch_pytest  # noqa: E402
from launch.actions import ExecuteProcess, RegisterEventHandler  # noqa: E402
from launch.event_handlers import OnProcessExit, OnProcessIO  # noqa: E402

from harness.launch_system import (  # noqa: E402
    ACTIVE,
    FleetProbe,
    descendants,
    fleetctl,
    in_this_domain,
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
TAG = f'sim-{os.getpid()}'

SITE = 'site_s'
SHARDS = {'zone_1': [f'ss_r{i}' for i in range(1, 4)], 'zone_2': [f'ss_r{i}' for i in range(4, 6)]}
ROBOTS_PER_HOST = 2  # zone_1 takes two simulator hosts
OUTPUT: list[str] = []
EXIT: list[int] = []
TMP: list[Path] = []  # the TMPDIR of ros2 launch
LAUNCH: dict[str, ExecuteProcess] = {}
STOPPED: dict[int, str] = {}  # what SIGINT stopped


@pytest.fixture(scope='module')
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_layout(tmp_path_factory.mktemp('sim') / 'fleet.yaml', SITE, SHARDS)


@ros2_tools.launch_fixture(scope='module')
def sim_fleet(layout: Path) -> LaunchDescription:
    BEFORE.update(in_this_domain())  # other tests' processes are theirs to answer for
    TMP.append(layout.parent / 'tmp')
    TMP[0].mkdir()
    ros2_launch = ExecuteProcess(
        cmd=[
            'ros2',
            'launch',
            'fleet_bringup',
            'sim_launch.py',
            f'fleet_config:={layout}',
            'gateway:=false',
            'foxglove:=false',
            f'robots_per_host:={ROBOTS_PER_HOST}',
            f'store_dir:={layout.parent / "stores"}',
        ],
        name='ros2_launch_sim',
        output='screen',
        additional_env={'TMPDIR': str(TMP[0])},
        sigterm_timeout='15',
    )
    LAUNCH['sim'] = ros2_launch

    def collect(event: Any) -> None:
        OUTPUT.append(event.text.decode(errors='replace'))

    return LaunchDescription(
        [
            tag_action(TAG),
            ros2_launch,
            RegisterEventHandler(OnProcessIO(target_action=ros2_launch, on_stdout=collect, on_stderr=collect)),
            RegisterEventHandler(
                OnProcessExit(target_action=ros2_launch, on_exit=lambda e, _c: EXIT.append(e.returncode))
            ),
            launch_pytest.actions.ReadyToTest(),
        ]
    )


@pytest.fixture(scope='module', autouse=True)
def _stop_leftovers() -> Iterator[None]:
    """Whatever the tests' outcome, nothing this module launched outlives it."""
    yield
    stop_tagged(TAG)


@pytest.fixture
def probe(ros: Any) -> FleetProbe:
    return FleetProbe(ros.node('launch_sim_probe'), SITE, list(SHARDS))


@pytest.mark.launch(fixture=sim_fleet)
def test_the_simulated_fleet_comes_up_and_serves(ros: Any, probe: FleetProbe, layout: Path) -> None:
    for shard, agents in SHARDS.items():
        ros.spin_until(lambda s=shard, a=agents: probe.beats[s] >= set(a), 90, f'heartbeats of {agents}')
        for role in ('orchestrator', 'standby'):
            state = lifecycle_state(ros, f'/{SITE}/{shard}/{role}', timeout=60)
            assert state == ACTIVE, f'{shard}/{role} is in lifecycle state {state}'
    settle_on_one_leader(ros, probe, {shard: {f'{SITE}.{shard}.a', f'{SITE}.{shard}.b'} for shard in SHARDS})
    done = wait_for(
        lambda: (r := fleetctl(layout, 'submit', '--site', SITE, '--kind', 'noop', '--json')).returncode == 0 and r,
        60,
        interval=0.5,
        what='fleetctl submit to the whole site to succeed',
    )
    assert done.stdout.count('SUCCEEDED') == sum(len(a) for a in SHARDS.values()), done.stdout


@pytest.mark.launch(fixture=sim_fleet)
def test_sigint_to_ros2_launch_stops_everything() -> None:
    pid = LAUNCH['sim'].process_details['pid']
    children = wait_for(lambda: (c := descendants(pid)) and len(c) >= 7 and c, 60, what='the fleet under ros2 launch')
    executables = [cmd.split(' --ros-args')[0].rsplit('/', 1)[-1] for cmd in children.values()]
    assert sorted(executables) == ['fleet_sim_host'] * 3 + ['shard_orchestrator'] * 4, children
    os.kill(pid, signal.SIGINT)
    # ros2 launch itself SIGTERMs what still runs 5 s after its SIGINT and SIGKILLs it 5 s later (the next test sees
    # that in its output); this bound only leaves ros2 launch time to exit after its last process on a loaded host.
    wait_for(lambda: not still_running([pid, *children]), 20, what='ros2 launch and its processes to exit on SIGINT')
    assert not tagged(TAG), tagged(TAG)
    left = {pid: cmd for pid, cmd in in_this_domain().items() if pid not in BEFORE}
    assert not left, left
    STOPPED.update(children)


@pytest.mark.launch(fixture=sim_fleet)
def test_the_sigint_shutdown_is_orderly_and_quiet() -> None:
    # What the previous test's SIGINT left in ros2 launch's output: every process finished cleanly (exit code 0, no
    # crash on the way down), ros2 launch exited 0, and nothing logged a fatal error, a traceback or a context error.
    assert STOPPED, 'the SIGINT test did not run'
    wait_for(lambda: EXIT, 5, what='the launch to see ros2 launch exit')
    lines = ''.join(OUTPUT).splitlines()
    clean = [line for line in lines if 'process has finished cleanly' in line]
    assert len(clean) == len(STOPPED), _what_did_not_finish_cleanly(lines)
    noisy = [line for line in lines if '[FATAL]' in line or 'Traceback' in line or 'context is invalid' in line]
    assert not noisy, '\n'.join(noisy)
    assert EXIT == [0], '\n'.join(lines[-40:])


def _what_did_not_finish_cleanly(lines: list[str]) -> str:
    """Every line of each process without a "finished cleanly" line (a stuck one prints its threads' stacks there
    before it is killed), then the end of the output."""
    started = {m.group(1) for line in lines if (m := re.search(r'\[INFO\] \[([\w-]+)\]: process started', line))}
    clean = {m.group(1) for line in lines if (m := re.search(r'\[([\w-]+)\]: process has finished cleanly', line))}
    unclean = started - clean
    own = [line for line in lines if any(line.startswith(f'[{name}]') for name in unclean)]
    return '\n'.join([f'not finished cleanly: {sorted(unclean)}', *own, '...', *lines[-30:]])


@pytest.mark.launch(fixture=sim_fleet)
def test_the_launch_leaves_nothing_in_its_temp_directory() -> None:
    # launch_ros writes a node's dict parameters to a temp file it never removes; the launch files pass them as -p.
    assert STOPPED, 'the SIGINT test did not run'
    assert not list(TMP[0].iterdir()), sorted(path.name for path in TMP[0].iterdir())
