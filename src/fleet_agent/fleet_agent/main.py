"""`fleet_agent` entry point: host one agent (robot computer) or many (simulation) from parameters."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import rclpy
from rclpy.node import Node

from fleet_agent.executors import ExecutorFactory, SleepExecutor
from fleet_agent.node import AgentHostNode, AgentSpec
from fleet_core.config import ConfigError, FleetConfig, IntakeSettings, load_fleet_config
from fleet_core.health import HealthConfig
from fleet_ros.asyncio_node import run_nodes
from fleet_ros.params import declare


def default_state_dir() -> Path:
    return Path(os.environ.get('FLEETLANES_STATE_DIR', Path.home() / '.fleetlanes')) / 'agents'


def load_executor_factory(spec: str, delay_sec: float) -> ExecutorFactory:
    """'sleep' (built in) or 'package.module:function': function(delay_sec) returns the ExecutorFactory, called
    once per hosted agent with its ExecutorContext (identity, host node, loop)."""
    if spec == 'sleep':
        return lambda _agent: SleepExecutor(delay_sec)
    module_name, _, attr = spec.partition(':')
    if not attr:
        raise ConfigError(f"executor {spec!r}: expected 'sleep' or 'package.module:function'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f'executor {spec!r}: cannot load: {exc}') from None
    return factory(delay_sec)  # type: ignore[no-any-return]


def agent_specs(fleet: FleetConfig | None, site: str, shard: str, agent_ids: Sequence[str]) -> list[AgentSpec]:
    if agent_ids:
        if fleet is not None:
            for agent in agent_ids:
                owner = fleet.shard_of_agent(agent)
                if (owner.site_id, owner.shard_id) != (site, shard):
                    raise ConfigError(f'agent {agent} belongs to {owner.site_id}/{owner.shard_id}, not {site}/{shard}')
        return [AgentSpec(site, shard, a) for a in agent_ids]
    if fleet is None:
        raise ConfigError('give agent_ids, or fleet_config to host every agent of site_id/shard_id')
    if shard:
        return [AgentSpec(site, shard, a) for a in fleet.shard(site, shard).agents]
    return [AgentSpec(s.site_id, s.shard_id, a) for s in fleet.shards_of(site) for a in s.agents]


def main(argv: Sequence[str] | None = None) -> int:
    rclpy.init(args=argv)
    try:
        context = rclpy.get_default_context()
        params = Node('fleet_agent_params', context=context)
        site = declare(params, 'site_id', 'site_a', 'site of the hosted agent(s)')
        shard = declare(params, 'shard_id', '', 'shard of the hosted agent(s); empty with fleet_config = every shard')
        agent_ids = declare(params, 'agent_ids', [], 'agent ids to host; empty = every agent of the shard')
        config_path = declare(params, 'fleet_config', '', 'fleet layout YAML (config/fleet.yaml)')
        store_dir = declare(params, 'store_dir', str(default_state_dir()), 'directory of the per-agent dedup stores')
        executor_spec = declare(params, 'executor', 'sleep', "'sleep' or 'package.module:function' executor factory")
        delay = declare(params, 'exec_delay_sec', 0.0, 'fixed execution time added by the sleep executor (s)')
        node_name = declare(params, 'host_name', 'agent_host', 'ROS node name of the host')
        params.destroy_node()
        try:
            fleet = load_fleet_config(config_path) if config_path else None
            specs = agent_specs(fleet, site, shard, agent_ids)
            factory = load_executor_factory(executor_spec, delay)
        except ConfigError as exc:
            print(f'fleet_agent: error: {exc}', file=sys.stderr)
            return 2
        intake = fleet.intake if fleet else IntakeSettings()
        health = fleet.health if fleet else HealthConfig()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        node = AgentHostNode(
            specs,
            loop=loop,
            store_dir=Path(store_dir),
            executor_factory=factory,
            intake_settings=intake,
            heartbeat_period_sec=health.heartbeat_period_sec,
            node_name=node_name,
            context=context,
        )
        run_nodes(context, [node], node.run_heartbeats, cleanup=node.close_runtimes, loop=loop)
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
