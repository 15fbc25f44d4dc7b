"""What `ros2 param list/get/describe/set` meets on the running simulator host and diff-drive stand-in: their
parameters are declared on the node itself, described, read-only, and hold the values they were started with.
Read through the nodes' parameter services, as the ros2 CLI does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient

from harness.ros import RosHarness

pytestmark = pytest.mark.system


def parameters_of(ros: RosHarness, node_name: str, names: list[str]) -> tuple[dict[str, Any], Any, Any]:
    """(values of `names`, client, call) of a remote node, through its parameter services; `names` must be
    among the node's declared parameters."""
    client = AsyncParameterClient(ros.node('param_probe'), node_name)
    ros.spin_until(client.services_are_ready, 30, f'the parameter services of {node_name}')

    def call(request: Callable[[], Any]) -> Any:
        # every request here reads parameters or is refused alike (read-only ones): safe to send again
        return ros.call(request, 60, f'a parameter service reply from {node_name}', attempt_sec=10)

    listed = list(call(client.list_parameters).result.names)
    assert set(names) <= set(listed), f'{node_name} declares only {listed}'
    got = call(lambda: client.get_parameters(names)).values
    values = {name: parameter_value_to_python(value) for name, value in zip(names, got, strict=True)}
    return values, client, call


def test_sim_host_parameters_are_declared_on_the_running_node(ros, processes, tmp_path: Path) -> None:
    config = tmp_path / 'fleet.yaml'
    config.write_text('sites: {site_p: {shards: {zone_p: {agents: [p_r1]}}}}\n')
    processes.start(
        [
            'fleet_sim_host',
            '--ros-args',
            '-r',
            '__ns:=/sim/hp',
            '-p',
            f'fleet_config:={config}',
            '-p',
            'site_id:=site_p',
            '-p',
            'host_name:=hp',
            '-p',
            f'store_dir:={tmp_path / "store"}',
            '-p',
            'speed_mps:=2.5',
        ],
        name='sim_host',
    )
    names = ['site_id', 'host_name', 'fleet_config', 'speed_mps', 'odom_rate_hz']
    values, client, call = parameters_of(ros, '/sim/hp/sim_host', names)
    assert values['site_id'] == 'site_p' and values['host_name'] == 'hp' and values['fleet_config'] == str(config)
    assert values['speed_mps'] == 2.5
    descriptors = call(lambda: client.describe_parameters(['speed_mps', 'site_id'])).descriptors
    assert all(d.description and d.read_only for d in descriptors), descriptors
    results = call(lambda: client.set_parameters([Parameter('speed_mps', value=9.0)])).results
    assert not results[0].successful  # read-only: refused, not accepted and ignored


def test_diff_drive_stand_in_parameters_are_described_ranged_and_read_only(ros, processes) -> None:
    processes.start(
        ['fleet_diff_drive_sim', '--ros-args', '-r', '__ns:=/site_p/p_r1', '-p', 'rate_hz:=20.0'], name='base'
    )
    names = ['rate_hz', 'cmd_vel_topic', 'odom_topic', 'max_linear_mps', 'cmd_vel_timeout_sec']
    values, client, call = parameters_of(ros, '/site_p/p_r1/diff_drive_sim', names)
    assert values['rate_hz'] == 20.0 and values['cmd_vel_topic'] == 'cmd_vel'
    (rate,) = call(lambda: client.describe_parameters(['rate_hz'])).descriptors
    assert rate.description and rate.read_only and rate.floating_point_range[0].from_value == 1.0
