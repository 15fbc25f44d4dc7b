"""`fleet_agent` entry point: host one agent (robot computer) or many (simulation) from parameters."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rclpy.context import Context
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter_service import ParameterService

from fleet_agent.executors import ExecutorFactory, SleepExecutor
from fleet_agent.node import AgentHostNode, AgentSpec
from fleet_core.config import ConfigError, FleetConfig, IntakeSettings, load_fleet_config
from fleet_core.health import HealthConfig
from fleet_core.trace import TraceConfigError, TraceSettings
from fleet_ros.params import declare
from fleet_ros.runtime import RosProgram, run_program

HOST_NAME_DESCRIPTION = 'ROS node name of the host (also names its dedup store <store_dir>/<host_name>.sqlite)'


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
    made = factory(delay_sec)
    if not callable(made):
        raise ConfigError(f'executor {spec!r}: {attr}() returned a {type(made).__name__}, not an executor factory')
    result: ExecutorFactory = made  # a plug-in: beyond being callable, its type is its author's word
    return result


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


def trace_settings(fleet: FleetConfig | None, fraction: float, enabled: bool) -> TraceSettings:
    """The agent samples its hops as the shard's orchestrators do: fleet_config `tracing`, overridden by the same
    two parameters (a negative fraction keeps the config's)."""
    base = fleet.tracing if fleet else TraceSettings()
    try:
        return replace(
            base, enabled=base.enabled and enabled, sample_fraction=fraction if fraction >= 0 else base.sample_fraction
        )
    except TraceConfigError as exc:
        raise ConfigError(f'trace_sample_fraction: {exc}') from None


class ConfiguredAgentHost(AgentHostNode):
    """The `fleet_agent` process's node: declares its parameters on itself (so `ros2 param list/get/describe` on
    the running node shows them), reads them, then hosts. Raises ConfigError for invalid values."""

    def __init__(self, node_name: str, *, loop: asyncio.AbstractEventLoop, context: Context) -> None:
        # Parameter services start once every parameter (the plug-ins' too) is declared: a `ros2 param list` that
        # finds the node finds all of them.
        Node.__init__(self, node_name, context=context, start_parameter_services=False)
        try:
            self._configure(node_name, loop)
        except ConfigError:
            self.destroy_node()
            raise
        self._parameter_service = ParameterService(self)

    def _configure(self, node_name: str, loop: asyncio.AbstractEventLoop) -> None:
        # Read once at start (nothing re-reads them), so all are read-only: `ros2 param set` is refused, never ignored.
        def fixed(name: str, default: Any, description: str, value_range: tuple[float, float] | None = None) -> Any:
            try:
                return declare(self, name, default, description, read_only=True, value_range=value_range)
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                raise ConfigError(f'parameter {name}: {exc}') from None

        site = fixed('site_id', 'site_a', 'site of the hosted agent(s)')
        shard = fixed('shard_id', '', 'shard of the hosted agent(s); empty with fleet_config = every shard')
        agent_ids = fixed('agent_ids', [], 'agent ids to host; empty = every agent of the shard')
        config_path = fixed('fleet_config', '', 'fleet layout YAML (config/fleet.yaml)')
        store_dir = fixed('store_dir', str(default_state_dir()), 'directory of the per-agent dedup stores')
        executor_spec = fixed('executor', 'sleep', "'sleep' or 'package.module:function' executor factory")
        delay = fixed('exec_delay_sec', 0.0, 'fixed execution time added by the sleep executor (s)', (0.0, 3600.0))
        fixed('host_name', node_name, HOST_NAME_DESCRIPTION)
        fraction = fixed(
            'trace_sample_fraction',
            -1.0,
            'share of submissions traced (0..1); < 0: from fleet_config tracing',
            (-1.0, 1.0),
        )
        tracing = fixed('tracing_enabled', True, 'publish the agent-side TraceEvents (if fleet_config allows)')
        durability = fixed(
            'durability',
            '',
            "dedup store: 'normal' survives process crashes, 'full' (fsync per commit) power loss too; "
            'empty: fleet_config intake.durability',
        )
        fleet = load_fleet_config(config_path) if config_path else None
        specs = agent_specs(fleet, site, shard, agent_ids)
        factory = load_executor_factory(executor_spec, delay)
        intake = fleet.intake if fleet else IntakeSettings()
        if durability:
            intake = replace(intake, durability=durability)
        self._host(
            specs,
            store_name=node_name,
            loop=loop,
            store_dir=Path(store_dir),
            executor_factory=factory,
            intake_settings=intake,
            heartbeat_period_sec=(fleet.health if fleet else HealthConfig()).heartbeat_period_sec,
            trace_settings=trace_settings(fleet, fraction, tracing),
            degradation=fleet.degradation if fleet else None,
        )


def host_name(context: Context) -> str:
    """The `host_name` parameter names the node, so it is read before the node exists (a node cannot be renamed).
    The host node declares it again, with every other parameter."""
    probe = Node('fleet_agent_name', context=context, start_parameter_services=False)
    try:
        return str(declare(probe, 'host_name', 'agent_host', HOST_NAME_DESCRIPTION))
    finally:
        probe.destroy_node()


def main(argv: Sequence[str] | None = None) -> int:
    return run_program(
        'fleet_agent', _run, args=list(argv) if argv is not None else None, startup_errors=(ConfigError,)
    )


def _run(program: RosProgram) -> None:
    node = program.add_node(ConfiguredAgentHost(host_name(program.context), loop=program.loop, context=program.context))
    program.run_async(node.run_heartbeats, cleanup=node.close_runtimes)


if __name__ == '__main__':
    sys.exit(main())
