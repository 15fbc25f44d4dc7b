"""The agent's parameters are declared on the running host node itself: another node lists, reads and describes
them through that node's parameter services (what `ros2 param list/get/describe` does)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient

from harness.processes import wait_exit

pytestmark = pytest.mark.system

SITE, SHARD = 'site_pa', 'zone_pa'
EXPECTED = {
    'site_id',
    'shard_id',
    'agent_ids',
    'fleet_config',
    'store_dir',
    'executor',
    'exec_delay_sec',
    'host_name',
    'trace_sample_fraction',
    'tracing_enabled',
    'durability',
}


def test_agent_parameters_are_on_the_running_node(ros, processes, tmp_path: Path):
    config = tmp_path / 'fleet.yaml'
    config.write_text(yaml.safe_dump({'sites': {SITE: {'shards': {SHARD: {'agents': ['r1', 'r2']}}}}}))
    store = tmp_path / 'st'
    agent = processes.start(
        [
            'fleet_agent',
            '--ros-args',
            '-p',
            f'fleet_config:={config}',
            '-p',
            f'site_id:={SITE}',
            '-p',
            f'shard_id:={SHARD}',
            '-p',
            f'store_dir:={store}',
            '-p',
            'exec_delay_sec:=0.25',
            '-p',
            'host_name:=param_host',
            '-p',
            'durability:=full',
        ],
        name='agent',
    )
    node = ros.node('agent_params_test')
    client = AsyncParameterClient(node, '/param_host')
    ros.spin_until(client.services_are_ready, 30.0, 'the parameter services of /param_host')

    def call(future):
        ros.spin_until(future.done, 10.0, 'a parameter service reply')
        return future.result()

    names = set(call(client.list_parameters()).result.names)
    assert names >= EXPECTED, EXPECTED - names
    values = {
        name: value
        for name, value in zip(
            ['site_id', 'shard_id', 'store_dir', 'exec_delay_sec', 'executor', 'host_name'],
            call(
                client.get_parameters(['site_id', 'shard_id', 'store_dir', 'exec_delay_sec', 'executor', 'host_name'])
            ).values,
            strict=True,
        )
    }
    assert values['site_id'].string_value == SITE and values['shard_id'].string_value == SHARD
    assert values['store_dir'].string_value == str(store)
    assert values['exec_delay_sec'].double_value == 0.25
    assert values['executor'].string_value == 'sleep' and values['host_name'].string_value == 'param_host'
    durability = call(client.get_parameters(['durability'])).values[0]
    assert durability.string_value == 'full'
    assert '(durability full)' in agent.output()  # the store was opened with synchronous=FULL
    descriptors = call(client.describe_parameters(sorted(EXPECTED))).descriptors
    assert all(d.description for d in descriptors), [d.name for d in descriptors if not d.description]
    assert (store / 'param_host.sqlite').exists()  # host_name still names the node and its store
    assert all(d.read_only for d in descriptors)
    # Nothing re-reads them at runtime: a set is refused rather than reported done while nothing changes.
    results = call(client.set_parameters([Parameter('executor', value='other:factory')])).results
    assert not results[0].successful
    assert call(client.get_parameters(['executor'])).values[0].string_value == 'sleep'


def test_out_of_range_parameter_exits_2_naming_it(processes, tmp_path: Path):
    bad = processes.start(
        [
            'fleet_agent',
            '--ros-args',
            '-p',
            'agent_ids:=[r1]',
            '-p',
            'shard_id:=z1',
            '-p',
            f'store_dir:={tmp_path}',
            '-p',
            'exec_delay_sec:=-1.0',
        ],
        name='bad-agent',
    )
    assert wait_exit(bad, 30.0) == 2
    assert 'parameter exec_delay_sec' in bad.output()
