"""fleetctl's input checks, run in-process: every malformed invocation ends with one line on stderr and exit 2,
before any ROS context exists."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fleet_cli import inputs
from fleet_cli.main import main
from fleet_core.config import parse_fleet_config

FLEET_YAML = """
sites:
  s:
    shards:
      z:
        agents: [r1]
dispatch:
  max_ttl_sec: 120.0
"""


@pytest.fixture
def fleet_yaml(tmp_path: Path) -> Path:
    path = tmp_path / 'fleet.yaml'
    path.write_text(FLEET_YAML)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's way out
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert captured.out == ''
    return code, captured.err


def assert_one_line(err: str, *fragments: str) -> None:
    assert err.count('\n') == 1 and err.endswith('\n'), err
    assert 'Traceback' not in err
    for fragment in fragments:
        assert fragment in err, err


def nested(depth: int) -> str:
    return '{"a":' * depth + '1' + '}' * depth


@pytest.mark.parametrize(
    ('extra', 'fragments'),
    [
        (['--args', nested(100_000)], ['--args is nested deeper than']),
        (['--args', nested(inputs.MAX_JSON_DEPTH + 1)], ['--args is nested deeper than']),
        (['--arg', 'x=' + '[' * 100_000 + ']' * 100_000], ['--arg x is nested deeper than']),
        (['--args', '[1, 2]'], ['--args must be a JSON object']),
        (['--args', '{"x": NaN}'], ['--args is not valid JSON']),
        (['--args', '{'], ['--args is not valid JSON']),
        (['--arg', 'novalue'], ["--arg 'novalue': expected KEY=VALUE"]),
        (['--ttl', 'inf'], ['argument --ttl', 'finite number of seconds > 0']),
        (['--ttl', 'nan'], ['argument --ttl', 'finite number of seconds > 0']),
        (['--ttl', '0'], ['argument --ttl']),
        (['--ttl', 'soon'], ['argument --ttl', "'soon' is not a number of seconds"]),
        (['--ttl', '100000'], ['--ttl must be in (0, 120] seconds', 'dispatch.max_ttl_sec']),
        (['--ttl', '120.5'], ['--ttl must be in (0, 120] seconds']),
        (['--priority', 'urgent'], ['argument --priority: invalid choice']),
    ],
)
def test_malformed_submit_is_one_line_and_exit_2(
    fleet_yaml: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragments: list[str]
) -> None:
    code, err = run(['--config', str(fleet_yaml), 'submit', '--site', 's', '--kind', 'noop', *extra], capsys)
    assert code == 2
    assert_one_line(err, 'fleetctl submit: error: ', *fragments)


@pytest.mark.parametrize(
    ('argv', 'fragments'),
    [
        (['trace', ''], ['fleetctl trace: error: argument command_id: the command id is empty']),
        (['trace', 'a b'], ['spaces or control characters']),
        (['trace', 'x' * 129], ['longer than 128']),
        (['trace', 'abc', '--wait', 'inf'], ['argument --wait']),
        (['trace', 'abc', '--wait', '-1'], ['argument --wait']),
        (['mission', 'start', 'inspection', '--site', 's', '--points', '3', '--timeout', 'nan'], ['--timeout']),
        (['submit'], ['the following arguments are required: --kind']),
        (['no-such-verb'], ['invalid choice']),
        ([], ['the following arguments are required: VERB']),
    ],
)
def test_malformed_invocations_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragments: list[str]
) -> None:
    code, err = run(argv, capsys)
    assert code == 2
    assert_one_line(err, 'error: ', *fragments)
    assert '(see fleetctl' in err


def test_ttl_limit_comes_from_the_config() -> None:
    fleet = parse_fleet_config({'sites': {'s': {'shards': {'z': {'agents': ['r1']}}}}, 'dispatch': {'max_ttl_sec': 5}})
    assert inputs.check_ttl(5.0, fleet) == 5.0
    with pytest.raises(inputs.UsageError, match=r'\(0, 5\]'):
        inputs.check_ttl(5.001, fleet)


def test_args_and_arg_values_are_merged_as_compact_json() -> None:
    text = inputs.command_args_json('{"x": 1, "y": 2}', ['y=3', 'name=dock_2', 'pose={"z": [1, 2]}', 'empty='])
    assert json.loads(text) == {'x': 1, 'y': 3, 'name': 'dock_2', 'pose': {'z': [1, 2]}, 'empty': ''}
    assert ' ' not in text
    assert json.loads(inputs.command_args_json(nested(inputs.MAX_JSON_DEPTH), [])) == json.loads(
        nested(inputs.MAX_JSON_DEPTH)
    )
    assert json.loads(inputs.command_args_json('{}', ['v=NaN'])) == {'v': 'NaN'}  # not JSON: taken as a string


def test_argparse_types_accept_good_values() -> None:
    assert inputs.seconds('2.5') == 2.5
    assert inputs.command_id('7f3c-9a') == '7f3c-9a'
    with pytest.raises(argparse.ArgumentTypeError):
        inputs.seconds('-inf')
