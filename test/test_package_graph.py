"""The README's architecture is the code's: the package graph names exactly the fleet dependencies each package.xml
declares, every fleet package a package imports is declared, no package depends on one in its own or a higher layer,
and each guarantee (G1-G9) names one pure module that exists and imports no rclpy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
PACKAGES = sorted(p.parent.name for p in (ROOT / 'src').glob('*/package.xml'))
_IMPORT = re.compile(r'^\s*(?:from|import)\s+(fleet_\w+)', re.MULTILINE)
_DEPEND = re.compile(r'<(?:build_|exec_|test_|build_export_)?depend>(fleet_\w+)</')
_ROS_IMPORT = re.compile(r'^\s*(?:from|import)\s+rclpy\b', re.MULTILINE)


def _table_after(heading: str) -> list[list[str]]:
    """Cells of the first markdown table after `heading` (header and separator rows left out)."""
    lines = README.read_text().splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith('#'):
            break
        if line.startswith('|'):
            rows.append([cell.strip() for cell in line.strip().strip('|').split('|')])
        elif rows:
            break
    return rows[2:]


def _names(cell: str) -> set[str]:
    return set(re.findall(r'`(fleet_\w+)`', cell))


def documented_graph() -> dict[str, tuple[int, set[str]]]:
    graph = {}
    for layer, package, depends, *_ in _table_after('### Package graph'):
        (name,) = _names(package)
        graph[name] = (int(layer), _names(depends))
    return graph


def declared(package: str) -> set[str]:
    return set(_DEPEND.findall((ROOT / 'src' / package / 'package.xml').read_text())) - {package}


def imported(package: str) -> set[str]:
    found: set[str] = set()
    for source in (ROOT / 'src' / package / package).rglob('*.py'):  # none for fleet_interfaces (ament_cmake)
        found |= set(_IMPORT.findall(source.read_text()))
    return found - {package}


def test_the_graph_names_every_package() -> None:
    assert sorted(documented_graph()) == PACKAGES


@pytest.mark.parametrize('package', PACKAGES)
def test_documented_dependencies_are_the_declared_ones(package: str) -> None:
    assert documented_graph()[package][1] == declared(package), f'README package graph vs {package}/package.xml'


@pytest.mark.parametrize('package', PACKAGES)
def test_every_imported_fleet_package_is_declared(package: str) -> None:
    assert imported(package) <= declared(package), f'{package} imports packages its package.xml does not declare'


def test_no_package_depends_on_its_own_layer_or_above() -> None:
    graph = documented_graph()
    for package, (layer, depends) in graph.items():
        for dependency in depends:
            assert graph[dependency][0] < layer, f'{package} (layer {layer}) depends on {dependency}'


def test_each_guarantee_lives_in_one_pure_module() -> None:
    rows = [row for row in _table_after('## What it guarantees') if re.fullmatch(r'G\d', row[0])]
    assert [row[0] for row in rows] == [f'G{i}' for i in range(1, 10)]
    for guarantee, _promise, where, *_ in rows:
        module = re.search(r'`((fleet_\w+)/[\w/]+\.py)`', where)
        assert module is not None, f'{guarantee}: no module named in {where!r}'
        path = ROOT / 'src' / module[2] / module[1]
        assert path.is_file(), f'{guarantee}: {path} does not exist'
        assert not _ROS_IMPORT.search(path.read_text()), f'{guarantee}: {module[1]} imports rclpy'
