"""The recording program behind `fleet_record` and `fleetctl record`: its console script resolves, and bad
arguments end with one line and exit 2 before any ROS is started."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from fleet_observability import record_main


def test_the_fleet_record_console_script_points_at_main() -> None:
    (script,) = entry_points(group='console_scripts', name='fleet_record')
    assert script.load() is record_main.main


@pytest.mark.parametrize(
    ('extra', 'message'),
    [
        ([], 'exists (pass --force to overwrite)'),
        (['--force', '--duration', '0'], '--duration must be > 0'),
        (['--force', '--duration', 'nan'], '--duration must be > 0'),
        (['--force', '--discovery-period', '-1'], '--discovery-period must be > 0'),
        (['--force', '--topic', 'fleet/**'], 'must be absolute'),
    ],
)
def test_bad_arguments_end_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    output = tmp_path / 'kept.mcap'
    output.write_bytes(b'precious')
    assert record_main.main(['-o', str(output), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith('fleet_record: error: ') and message in err and err.count('\n') == 1
    assert output.read_bytes() == b'precious'
