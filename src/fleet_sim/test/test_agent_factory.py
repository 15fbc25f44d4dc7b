"""`fleet_sim.executor:agent_factory`, the executor plug-in a plain `fleet_agent` loads by name."""

from __future__ import annotations

import asyncio

import pytest

from fleet_agent.executors import ExecutorContext
from fleet_sim.executor import agent_factory
from fleet_sim.settings import SimSettings


@pytest.mark.parametrize(('delay_sec', 'inspect_sec'), [(3.0, 3.0), (0.1, SimSettings().inspect_sec)])
def test_inspect_takes_at_least_the_agents_delay(delay_sec: float, inspect_sec: float) -> None:
    loop = asyncio.new_event_loop()
    try:
        factory = agent_factory(delay_sec)
        # The simulated executor never touches the node.
        executor = factory(ExecutorContext('site_a', 'zone_1', 'r1', node=None, loop=loop))
    finally:
        loop.close()
    assert executor.settings.inspect_sec == inspect_sec
