"""The Foxglove layout: one tab per shard wired to that shard's topics; the committed file is current."""

from __future__ import annotations

import json
from pathlib import Path

from fleet_core.config import load_fleet_config, parse_fleet_config
from fleet_observability.layout import layout_json

ROOT = Path(__file__).resolve().parents[3]


def _panels(node: object) -> list[dict]:
    found: list[dict] = []
    if isinstance(node, dict):
        if node.get('type') == 'panel':
            found.append(node)
        for value in node.values():
            found.extend(_panels(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_panels(value))
    return found


def test_tab_per_shard_with_its_topics() -> None:
    fleet = parse_fleet_config(
        {'sites': {'s1': {'shards': {'z1': {'agents': ['r1', 'r2']}, 'z2': {'agents': ['r3']}}}}}
    )
    layout = json.loads(layout_json(fleet))
    tabs = layout['content']['tabs']
    assert [t['title'] for t in tabs] == ['fleet', 's1/z1', 's1/z2']
    panels = _panels(tabs[1])
    kinds = {p['panelType'] for p in panels}
    assert {'RawMessages', 'Plot', 'ThreeDee', 'Table'} <= kinds
    raw = next(p for p in panels if p['panelType'] == 'RawMessages')
    assert raw['config']['topicPath'] == '/fleet/s1/z1/status'
    three_d = next(p for p in panels if p['panelType'] == 'ThreeDee')
    assert set(three_d['config']['topics']) == {'/s1/r1/odom', '/s1/r2/odom'}
    tables = [p['config']['topicPath'] for p in panels if p['panelType'] == 'Table']
    assert '/fleet/s1/z1/trace' in tables
    plots = [s['value'] for p in panels if p['panelType'] == 'Plot' for s in p['config']['paths']]
    assert '/fleet/s1/z1/status.ack_latency_p99_ms' in plots
    publish = next(p for p in panels if p['panelType'] == 'Publish')
    assert (publish['config']['topicName'], publish['config']['datatype']) == (
        '/fleet/s1/z1/estop',
        'fleet_interfaces/msg/EStop',
    )
    assert json.loads(publish['config']['value'])['engaged'] is True
    assert 'TopicGraph' in {p['panelType'] for p in _panels(tabs[0])}


def test_committed_layout_matches_the_fleet_config() -> None:
    fleet = load_fleet_config(ROOT / 'config' / 'fleet.yaml')
    committed = (ROOT / 'config' / 'foxglove' / 'fleet_layout.json').read_text()
    assert committed == layout_json(fleet), (
        'regenerate: python -m fleet_observability.layout --config config/fleet.yaml'
    )
