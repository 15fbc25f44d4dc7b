"""The ROS 2 launch files and `fleetctl up` start the same node set: both come from fleet_bringup.nodes, and this test
runs the launch files' own code (generate_launch_description and its OpaqueFunction) against recording stand-ins
for `launch`/`launch_ros`, then compares with `fleetctl up --dry-run`'s plan. The launch files run for real in
test_launch_site.py, test_launch_sim.py and test_ros2_cli.py."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from fleet_bringup.nodes import default_options, describe, robot_nodes
from fleet_cli.main import build_parser
from fleet_cli.verbs import up
from fleet_core.config import load_fleet_config

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_DIR = ROOT / 'launch'
CONFIG = ROOT / 'config' / 'fleet.yaml'


class _Recorded:
    """Stand-in for a launch action or substitution: keeps what the launch file passed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


class _LaunchDescription(_Recorded):
    pass


class _DeclareLaunchArgument(_Recorded):
    pass


class _OpaqueFunction(_Recorded):
    pass


class _ExecuteProcess(_Recorded):
    pass


class _Node(_Recorded):
    pass


class _ExecutableInPackage(_Recorded):
    pass


class _Parameter(_Recorded):
    pass


class _LaunchConfiguration(_Recorded):
    def perform(self, context: types.SimpleNamespace) -> str:
        return context.launch_configurations[self.args[0]]


def _fake_launch_modules() -> dict[str, types.ModuleType]:
    def module(name: str, **attrs: object) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        return mod

    return {
        'launch': module('launch', LaunchDescription=_LaunchDescription),
        'launch.actions': module(
            'launch.actions',
            DeclareLaunchArgument=_DeclareLaunchArgument,
            OpaqueFunction=_OpaqueFunction,
            ExecuteProcess=_ExecuteProcess,
        ),
        'launch.substitutions': module('launch.substitutions', LaunchConfiguration=_LaunchConfiguration),
        'launch_ros': module('launch_ros'),
        'launch_ros.actions': module('launch_ros.actions', Node=_Node),
        'launch_ros.substitutions': module('launch_ros.substitutions', ExecutableInPackage=_ExecutableInPackage),
        'launch_ros.parameter_descriptions': module('launch_ros.parameter_descriptions', Parameter=_Parameter),
    }


def _run_launch_file(monkeypatch: pytest.MonkeyPatch, name: str, overrides: dict[str, str]) -> tuple[dict, list]:
    """Returns ({argument: (default, description)}, actions the OpaqueFunction produced)."""
    for mod_name, mod in _fake_launch_modules().items():
        monkeypatch.setitem(sys.modules, mod_name, mod)
    spec = importlib.util.spec_from_file_location(f'launch_under_test_{name}', LAUNCH_DIR / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = {
        e.args[0]: (e.kwargs.get('default_value'), e.kwargs.get('description'))
        for e in entities
        if isinstance(e, _DeclareLaunchArgument)
    }
    opaque = [e for e in entities if isinstance(e, _OpaqueFunction)]
    assert len(opaque) == 1, f'{name}: expected one OpaqueFunction building the node set'
    configurations = {arg: default for arg, (default, _) in declared.items() if default is not None}
    configurations.update(overrides)
    return declared, opaque[0].kwargs['function'](types.SimpleNamespace(launch_configurations=configurations))


def _as_rows(actions: list[Any]) -> list[dict[str, object]]:
    rows = []
    for action in actions:
        if isinstance(action, _Node):
            kw = action.kwargs
            files = [p for p in kw['parameters'] if not isinstance(p, _Parameter)]
            named = [p for p in kw['parameters'] if isinstance(p, _Parameter)]
            assert kw['parameters'] == [*files, *named], 'a params file after a per-node parameter would override it'
            params = {p.args[0]: p.args[1] for p in named}
            rows.append(
                {
                    'package': kw['package'],
                    'executable': kw['executable'],
                    'node_name': kw['name'],
                    'namespace': kw['namespace'],
                    'params_files': files,
                    'parameters': params,
                    'arguments': kw['arguments'],
                }
            )
        else:
            assert isinstance(action, _ExecuteProcess)
            exe, *arguments = action.kwargs['cmd']
            rows.append(
                {
                    'package': exe.kwargs['package'],
                    'executable': exe.kwargs['executable'],
                    'node_name': '',
                    'namespace': '',
                    'params_files': [],
                    'parameters': {},
                    'arguments': arguments,
                }
            )
    return rows


def _up_rows(argv: list[str]) -> list[dict[str, object]]:
    args = build_parser().parse_args(['up', *argv])
    return [{k: v for k, v in row.items() if k != 'label'} for row in describe(up.plan(args))]


@pytest.mark.parametrize('name', ['site_launch.py', 'robot_launch.py', 'sim_launch.py'])
def test_every_launch_argument_has_a_description(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    overrides = {'agent_id': 'a1_r001'} if name == 'robot_launch.py' else {}
    declared, actions = _run_launch_file(monkeypatch, name, overrides)
    assert declared and actions
    for arg, (_, description) in declared.items():
        assert description and len(description) > 10, f'{name}: launch argument {arg!r} lacks a description'


@pytest.mark.parametrize(
    ('name', 'given', 'complaint'),
    [
        ('site_launch.py', {'site_id': 'site_a'}, 'unknown argument(s) site_id:='),
        ('robot_launch.py', {'agent_id': 'a1_r001', 'shard_id': 'zone_1'}, 'unknown argument(s) shard_id:='),
        ('robot_launch.py', {}, 'missing required argument(s) agent_id:='),
        ('sim_launch.py', {'robot_per_host': '5'}, 'unknown argument(s) robot_per_host:='),
        ('sim_launch.py', {'robots_per_host': 'five'}, "robots_per_host:= must be an integer, got 'five'"),
        ('site_launch.py', {'standbys': '-1'}, 'site_launch.py: standbys must be >= 0'),
        ('site_launch.py', {'gateway_port': '70000'}, 'site_launch.py: gateway_port must be 0..65535'),
        ('sim_launch.py', {'foxglove_port': '-2'}, 'sim_launch.py: foxglove_port must be 0..65535'),
        ('robot_launch.py', {'agent_id': 'nobody'}, 'robot_launch.py: '),
    ],
)
def test_launch_files_refuse_unknown_missing_and_bad_arguments(
    monkeypatch: pytest.MonkeyPatch, name: str, given: dict[str, str], complaint: str
) -> None:
    from fleet_bringup.launch_actions import LaunchArgumentError

    with pytest.raises(LaunchArgumentError) as caught:
        _run_launch_file(monkeypatch, name, given)
    message = str(caught.value)
    assert complaint in message
    if 'argument(s)' in complaint:
        assert message.startswith(f'{name}: ') and 'It takes: fleet_config, ' in message


def test_site_launch_and_fleetctl_up_start_the_same_node_set(monkeypatch: pytest.MonkeyPatch) -> None:
    _, actions = _run_launch_file(monkeypatch, 'site_launch.py', {'fleet_config': str(CONFIG)})
    launched = _as_rows(actions)
    assert launched == _up_rows([str(CONFIG)])
    roles = [row['node_name'] for row in launched]
    shards = len(load_fleet_config(CONFIG).shards)
    assert roles.count('orchestrator') == shards and roles.count('standby') == shards
    assert {row['executable'] for row in launched} == {'shard_orchestrator', 'fleet_gateway', 'fleet_foxglove'}


def test_site_launch_gateway_port_and_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {'fleet_config': str(CONFIG), 'site': 'site_b', 'gateway_port': '9391', 'foxglove_port': '9392'}
    _, actions = _run_launch_file(monkeypatch, 'site_launch.py', overrides)
    launched = _as_rows(actions)
    argv = [str(CONFIG), '--site', 'site_b', '--gateway-port', '9391', '--foxglove-port', '9392']
    assert launched == _up_rows(argv)
    servers = {row['executable']: row for row in launched if row['executable'] in ('fleet_gateway', 'fleet_foxglove')}
    gateway, foxglove = servers['fleet_gateway'], servers['fleet_foxglove']
    assert (gateway['node_name'], gateway['namespace']) == ('gateway', '/site_b')
    assert (foxglove['node_name'], foxglove['namespace']) == ('foxglove', '/site_b')
    assert gateway['parameters']['port'] == 9391 and gateway['parameters']['config_file'].endswith('gateway.yaml')
    assert foxglove['parameters'] == {'fleet_config': str(CONFIG), 'port': 9392}
    _, actions = _run_launch_file(monkeypatch, 'site_launch.py', {'fleet_config': str(CONFIG)})
    for row in _as_rows(actions):
        if row['executable'] in ('fleet_gateway', 'fleet_foxglove'):
            assert row['namespace'] == '' and 'port' not in row['parameters'], row


def test_sim_launch_and_fleetctl_up_sim_agree_with_options(monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {
        'fleet_config': str(CONFIG),
        'site': 'site_b',
        'standbys': '2',
        'gateway': 'false',
        'robots_per_host': '20',
        'store_dir': '/tmp/x',
    }
    _, actions = _run_launch_file(monkeypatch, 'sim_launch.py', overrides)
    launched = _as_rows(actions)
    argv = [
        str(CONFIG),
        '--sim',
        '--site',
        'site_b',
        '--standbys',
        '2',
        '--no-gateway',
        '--robots-per-host',
        '20',
        '--state-dir',
        '/tmp/x',
    ]
    assert launched == _up_rows(argv)
    hosts = [row for row in launched if row['executable'] == 'fleet_sim_host']
    fleet = load_fleet_config(CONFIG)
    robots = sum(len(s.agents) for s in fleet.shards_of('site_b'))
    assert len(hosts) == sum(-(-len(s.agents) // 20) for s in fleet.shards_of('site_b'))
    hosted = 0
    for host in hosts:
        params = host['parameters']
        hosted += len(params.get('agent_ids', [])) or len(fleet.shard('site_b', params['shard_id']).agents)
    assert hosted == robots
    assert all(row['parameters']['site_id'] == 'site_b' for row in launched if 'site_id' in row['parameters'])
    assert sum('site_id' in row['parameters'] for row in launched) == len(launched) - 1  # all but Foxglove


def test_robot_launch_matches_the_robot_node_set(monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {'fleet_config': str(CONFIG), 'agent_id': 'b2_r007', 'executor': 'my.robot:factory'}
    _, actions = _run_launch_file(monkeypatch, 'robot_launch.py', overrides)
    expected = robot_nodes(load_fleet_config(CONFIG), 'b2_r007', default_options(CONFIG), executor='my.robot:factory')
    assert _as_rows(actions) == [{k: v for k, v in row.items() if k != 'label'} for row in describe(expected)]
    assert _as_rows(actions)[0]['parameters']['shard_id'] == 'zone_2'


def test_every_process_of_the_node_set_is_installed() -> None:
    args = build_parser().parse_args(['up', str(CONFIG), '--sim'])
    for spec in up.plan(args):
        assert shutil.which(spec.executable), f'{spec.executable} ({spec.package}) is not on PATH; run make setup'
        argv = spec.argv()
        if spec.is_ros_node:
            assert argv[argv.index('--ros-args') + 1 :][:2] == ['-r', f'__node:={spec.node_name}']


def test_dry_run_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(['up', str(CONFIG), '--dry-run', '--no-foxglove'])
    assert args.func(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r['label'] for r in rows] == [s.label for s in up.plan(args)]
    assert not any(r['executable'] == 'fleet_foxglove' for r in rows)


def test_bringup_needs_no_simulator() -> None:
    """A robot computer installs the agent and fleet_bringup, never fleet_sim: the package neither imports it nor
    declares it, and robot_launch.py builds its node set with fleet_sim unimportable."""
    import subprocess

    package_xml = (ROOT / 'src' / 'fleet_bringup' / 'package.xml').read_text()
    assert 'fleet_bringup' in package_xml and '>fleet_sim<' not in package_xml
    script = (
        'import sys; sys.modules["fleet_sim"] = None\n'
        'import fleet_bringup.launch_actions, fleet_bringup.processes\n'
        'from fleet_bringup.nodes import default_options, robot_nodes\n'
        'from fleet_core.config import load_fleet_config\n'
        f'options = default_options({str(CONFIG)!r})\n'
        'specs = robot_nodes(load_fleet_config(options.fleet_config), "a1_r001", options)\n'
        'assert [s.executable for s in specs] == ["fleet_agent"], specs\n'
    )
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
