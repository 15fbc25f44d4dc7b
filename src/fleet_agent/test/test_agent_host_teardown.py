"""AgentHostNode teardown: `close_runtimes()` + `destroy_node()` give back the dedup database and every endpoint, a
host started again on the same store comes up exactly as the first did, and a host whose start fails half-way
(an executor plug-in refusing one agent) leaves nothing open behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet_agent.executors import ExecutorContext, SleepExecutor
from fleet_agent.node import AgentHostNode, AgentSpec
from fleet_core.config import ConfigError, IntakeSettings
from harness import wait_for
from harness.resources import entities, node_names, open_files_under

SPECS = [AgentSpec('site_a', 'zone_1', 'r1'), AgentSpec('site_a', 'zone_1', 'r2'), AgentSpec('site_a', 'zone_2', 'r3')]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def host(ros: Any, loop: asyncio.AbstractEventLoop, store_dir: Path, factory: Any = None) -> AgentHostNode:
    return AgentHostNode(
        SPECS,
        loop=loop,
        store_dir=store_dir,
        executor_factory=factory or (lambda _context: SleepExecutor(0.0)),
        intake_settings=IntakeSettings(),
        heartbeat_period_sec=1.0,
        context=ros.context,
    )


def test_close_releases_the_store_and_a_second_host_comes_up_alike(ros: Any, loop: Any, tmp_path: Path) -> None:
    observer = ros.node('teardown_observer')
    counts = []
    for _round in range(2):
        node = host(ros, loop, tmp_path)
        try:
            counts.append(entities(node))
            assert open_files_under(tmp_path), 'the host holds its dedup database open while it runs'
            assert 'agent_host' in node_names(observer)
            loop.run_until_complete(node.close_runtimes())
            assert open_files_under(tmp_path) == [], 'close_runtimes() left the dedup database open'
        finally:
            node.destroy_node()
        wait_for(lambda: 'agent_host' not in node_names(observer), 30.0, what='the destroyed host to leave the graph')
    # 3 command subscriptions + 4 per shard (e-stop, operations, lease, status); ack + heartbeat + trace per shard.
    assert counts[0]['subscriptions'] == 3 + 2 * 4
    assert counts[0] == counts[1]


def test_a_host_that_fails_to_start_leaves_nothing_open(ros: Any, loop: Any, tmp_path: Path) -> None:
    observer = ros.node('teardown_observer')

    def refuses_r2(context: ExecutorContext) -> SleepExecutor:
        if context.agent_id == 'r2':
            raise ConfigError('executor plug-in: r2 has no base driver')
        return SleepExecutor(0.0)

    with pytest.raises(ConfigError, match='r2 has no base driver'):
        host(ros, loop, tmp_path, refuses_r2)
    assert open_files_under(tmp_path) == [], 'a failed start left the dedup database open'
    wait_for(lambda: 'agent_host' not in node_names(observer), 30.0, what='the failed host to leave the graph')
    # And the store is usable at once by the next start.
    node = host(ros, loop, tmp_path)
    try:
        assert set(node.runtimes) == {'r1', 'r2', 'r3'}
        loop.run_until_complete(node.close_runtimes())
    finally:
        node.destroy_node()
