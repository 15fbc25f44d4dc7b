"""The workspace layout the project was specified with: src/, launch/, config/, msg/, test/, colcon.meta and README.md
at the top; the message definitions exist once (msg/, which fleet_interfaces builds from) and fleet_bringup installs
the one copy of launch/ and config/."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_top_level_layout() -> None:
    for name in ('src', 'launch', 'config', 'msg', 'test'):
        assert (ROOT / name).is_dir(), name
    for name in ('colcon.meta', 'README.md'):
        assert (ROOT / name).is_file(), name
    meta = json.loads((ROOT / 'colcon.meta').read_text())
    for package, options in meta['names'].items():
        assert (ROOT / 'src' / package / 'package.xml').is_file(), f'colcon.meta names unknown package {package}'
        assert options, package


def test_messages_are_defined_once_in_msg() -> None:
    package = ROOT / 'src' / 'fleet_interfaces'
    assert (package / 'msg').resolve() == (ROOT / 'msg').resolve()
    defined = sorted(p.name for p in (ROOT / 'msg').glob('*.msg'))
    built = sorted(Path(m).name for m in re.findall(r'"(msg/\w+\.msg)"', (package / 'CMakeLists.txt').read_text()))
    assert defined and defined == built
    copies = [p for p in ROOT.joinpath('src').rglob('*.msg') if not p.resolve().is_relative_to(ROOT / 'msg')]
    assert not copies, copies


def test_bringup_installs_the_top_level_launch_and_config() -> None:
    package = ROOT / 'src' / 'fleet_bringup'
    assert (package / 'launch').resolve() == (ROOT / 'launch').resolve()
    assert (package / 'config').resolve() == (ROOT / 'config').resolve()
    installed = ROOT / 'install' / 'fleet_bringup' / 'share' / 'fleet_bringup'
    for name in ('site_launch.py', 'robot_launch.py', 'sim_launch.py'):
        assert (installed / 'launch' / name).resolve() == (ROOT / 'launch' / name).resolve(), name
    assert (installed / 'config' / 'fleet.yaml').resolve() == (ROOT / 'config' / 'fleet.yaml').resolve()


def test_a_robot_computer_builds_no_simulator() -> None:
    """`colcon build --packages-up-to fleet_agent fleet_bringup` (the README's robot computer) leaves fleet_sim out."""
    import subprocess

    done = subprocess.run(
        ['colcon', 'list', '--packages-up-to', 'fleet_agent', 'fleet_bringup', '--names-only'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    packages = set(done.stdout.split())
    assert {'fleet_agent', 'fleet_bringup', 'fleet_core', 'fleet_ros', 'fleet_interfaces'} <= packages, packages
    assert 'fleet_sim' not in packages, packages
