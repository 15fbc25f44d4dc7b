"""SimHost teardown: `close()` gives back the execution log and the dedup database, the node then leaves the graph,
and a host started again on the same directory comes up as the first did; a start that fails (an agent the layout
does not place) leaves nothing open."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet_agent.node import AgentSpec
from fleet_core.config import ConfigError, load_fleet_config
from fleet_sim.host import SimHost, SimHostNode
from harness import wait_for
from harness.resources import entities, node_names, open_files_under

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def start(ros: Any, loop: asyncio.AbstractEventLoop, tmp_path: Path, agents: list[str]) -> tuple[Any, SimHost | None]:
    fleet = load_fleet_config(ROOT / 'config' / 'fleet.yaml')
    shard = fleet.shards[0]
    node = SimHostNode('sim_host', context=ros.context)
    try:
        host = SimHost(
            fleet,
            [AgentSpec(shard.site_id, shard.shard_id, agent) for agent in agents],
            node.parameters.settings,
            host_name='sim_host',
            store_dir=tmp_path,
            exec_log=tmp_path / 'exec.jsonl',
            loop=loop,
            node=node,
        )
    except BaseException:
        node.destroy_node()
        raise
    return node, host


def test_close_releases_log_and_store_and_a_second_host_comes_up_alike(ros: Any, loop: Any, tmp_path: Path) -> None:
    observer = ros.node('teardown_observer')
    agents = list(load_fleet_config(ROOT / 'config' / 'fleet.yaml').shards[0].agents[:2])
    counts = []
    for _round in range(2):
        node, host = start(ros, loop, tmp_path, agents)
        assert host is not None
        try:
            counts.append(entities(node))
            held = open_files_under(tmp_path)
            assert str(tmp_path / 'exec.jsonl') in held and str(tmp_path / 'sim_host.sqlite') in held
            loop.run_until_complete(host.close())
            assert open_files_under(tmp_path) == [], 'SimHost.close() left files open'
        finally:
            node.destroy_node()
        wait_for(lambda: 'sim_host' not in node_names(observer), 30.0, what='the destroyed host to leave the graph')
    assert counts[0]['publishers'] >= 2 + 2  # odometry per robot, ack and heartbeat of the shard
    assert counts[0] == counts[1]


def test_a_host_that_fails_to_start_leaves_nothing_open(ros: Any, loop: Any, tmp_path: Path) -> None:
    ros.node('teardown_observer')
    with pytest.raises(ConfigError, match='unknown agent'):
        start(ros, loop, tmp_path, ['not_in_the_layout'])
    assert open_files_under(tmp_path) == [], 'a failed start left files open'
