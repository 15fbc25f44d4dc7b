"""The gateway package's modules import each other without cycles (any import, also under TYPE_CHECKING and inside
functions): each layer can be read, tested and changed from the bottom up."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'fleet_gateway'


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports. `from pkg import mod` imports `mod` (Python runs
    `pkg/__init__` first for any of its submodules, so that edge says nothing about this module)."""
    modules = {module_name(path, package): path for path in package.rglob('*.py')}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f'{node.module}.{alias.name}' for alias in node.names]
                targets = [full for full in names if full in modules]
                if len(targets) < len(names):  # some names are the package's own attributes
                    targets.append(node.module)
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_the_gateway_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert 'fleet_gateway.protocol.session' in graph and 'fleet_gateway.server' in graph
    assert graph['fleet_gateway.protocol.session'] >= {'fleet_gateway.protocol.topics', 'fleet_gateway.protocol.served'}
    assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph) or [])
