"""`fleet_sim_host`: one process hosting many simulated robots on the real agent intake (AgentHostNode), with
odometry and fault injection. Parameters come from config/sim.yaml (`/**/sim_host: ros__parameters:`)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rclpy.context import Context
from rclpy.node import Node
from std_msgs.msg import String

from fleet_agent.executors import ExecutorContext
from fleet_agent.main import default_state_dir
from fleet_agent.node import AgentHostNode, AgentSpec
from fleet_core.config import ConfigError, FleetConfig, load_fleet_config
from fleet_ros import qos
from fleet_ros.params import declare
from fleet_ros.runtime import RosProgram, run_program
from fleet_sim.execlog import ExecutionLog
from fleet_sim.executor import SimExecutor, agent_rng
from fleet_sim.faults import FAULT_TOPIC, FaultError, FaultState, parse_fault
from fleet_sim.layout import home_of
from fleet_sim.odometry import OdometryPublisher
from fleet_sim.robot import SimRobot
from fleet_sim.settings import SimConfigError, SimSettings, parse_sim_settings

NODE_NAME = 'sim_host'


def host_agents(fleet: FleetConfig, site: str, shard: str, agent_ids: Sequence[str]) -> list[AgentSpec]:
    """Explicit `agent_ids` (from any shards of the fleet), else every agent of site/shard (or of the site)."""
    if agent_ids:
        specs = []
        for agent in agent_ids:
            owner = fleet.shard_of_agent(agent)
            specs.append(AgentSpec(owner.site_id, owner.shard_id, agent))
        return specs
    if not site:
        return [AgentSpec(s.site_id, s.shard_id, a) for s in fleet.shards for a in s.agents]
    shards = [fleet.shard(site, shard)] if shard else list(fleet.shards_of(site))
    return [AgentSpec(s.site_id, s.shard_id, a) for s in shards for a in s.agents]


@dataclass(frozen=True, slots=True)
class HostParameters:
    """The parameters of a `fleet_sim_host` node (read-only: they shape the process at start)."""

    site_id: str
    shard_id: str
    agent_ids: tuple[str, ...]
    fleet_config: str
    store_dir: str
    host_name: str
    exec_log: str
    settings: SimSettings


def declare_host_parameters(node: Node) -> HostParameters:
    """Declare every parameter of the host on `node` and read them. Raises SimConfigError for invalid settings."""

    def fixed(name: str, default: Any, description: str) -> Any:
        return declare(node, name, default, description, read_only=True)

    site = fixed('site_id', '', 'site of the hosted robots (empty with fleet_config: every site)')
    shard = fixed('shard_id', '', 'shard of the hosted robots (empty: every shard of site_id)')
    agent_ids = fixed('agent_ids', [], 'robots to host, from any shard; empty: by site_id/shard_id')
    config_path = fixed('fleet_config', '', 'fleet layout YAML (config/fleet.yaml)')
    store_dir = fixed('store_dir', str(default_state_dir()), 'directory of the per-robot dedup stores')
    host_name = fixed('host_name', 'sim_host', 'name of this host in fault requests and logs')
    exec_log = fixed('exec_log', '', 'execution log (JSONL); empty: <store_dir>/exec-<host_name>.jsonl')
    defaults = SimSettings()
    raw = {f.name: fixed(f.name, getattr(defaults, f.name), defaults.describe(f.name)) for f in fields(defaults)}
    settings = parse_sim_settings(raw, f'node {node.get_fully_qualified_name()} parameters')
    return HostParameters(site, shard, tuple(agent_ids), config_path, store_dir, host_name, exec_log, settings)


class SimHostNode(AgentHostNode):
    """The `fleet_sim_host` node: declares its parameters on itself (so `ros2 param list/get/describe` on the
    running node shows them), then hosts the robots SimHost wires to it. Raises SimConfigError for invalid values."""

    def __init__(self, node_name: str = NODE_NAME, *, context: Context | None = None) -> None:
        Node.__init__(self, node_name, context=context)
        try:
            self.parameters = declare_host_parameters(self)
        except SimConfigError:
            self.destroy_node()
            raise

    def host(self, specs: list[AgentSpec], **hosting: Any) -> None:
        """Host `specs` (AgentHostNode's keyword arguments); the dedup database is named after the node."""
        self._host(specs, store_name=self.get_name(), **hosting)


class SimHost:
    """Wires robots, executors, faults and odometry around one SimHostNode."""

    def __init__(
        self,
        fleet: FleetConfig,
        specs: list[AgentSpec],
        settings: SimSettings,
        *,
        host_name: str,
        store_dir: Path,
        exec_log: Path,
        loop: asyncio.AbstractEventLoop,
        node: SimHostNode,
    ) -> None:
        self.host_name = host_name
        self.faults = FaultState(host_name, [s.agent_id for s in specs])
        self.log = ExecutionLog(exec_log, host_name)
        try:
            self.robots = {
                s.agent_id: SimRobot(
                    s.agent_id,
                    home_of(fleet, s.agent_id),
                    battery_pct=settings.battery_initial_pct,
                    drain_per_m=settings.battery_drain_per_m,
                    drain_per_sec=settings.battery_drain_per_sec,
                    charge_per_sec=settings.battery_charge_per_sec,
                )
                for s in specs
            }

            def executor(spec: ExecutorContext) -> SimExecutor:
                return SimExecutor(
                    self.robots[spec.agent_id],
                    settings,
                    rng=agent_rng(settings.seed, spec.agent_id),
                    log=self.log,
                    faults=self.faults,
                    agent_clock=self.faults.agent_clock(spec.agent_id),
                )

            node.host(
                specs,
                loop=loop,
                store_dir=store_dir,
                executor_factory=executor,
                intake_settings=fleet.intake,
                heartbeat_period_sec=fleet.health.heartbeat_period_sec,
                link=self.faults.allow,
                agent_clock=self.faults.agent_clock,
            )
            self.node = node
            self.odometry = OdometryPublisher(self.node, self.robots, self.node.runtimes, rate_hz=settings.odom_rate_hz)

            def on_fault(msg: String) -> None:
                loop.call_soon_threadsafe(self._on_fault, msg.data)

            self.node.create_subscription(String, FAULT_TOPIC, on_fault, qos.EVENTS)
        except BaseException:
            self.log.close()  # a start that fails (an agent the layout does not place) keeps no file open
            raise

    def _on_fault(self, text: str) -> None:
        try:
            fault = parse_fault(text)
        except FaultError as exc:
            self.node.get_logger().warning(f'host {self.host_name}: ignoring fault request: {exc}')
            return
        targets = self.faults.apply(fault)
        if targets:
            self.node.get_logger().warning(
                f'host {self.host_name}: fault {fault.op} on {len(targets)} agent(s) '
                f'({", ".join(targets[:5])}{", ..." if len(targets) > 5 else ""}) '
                f'duration={fault.duration_sec}s factor={fault.factor} offset={fault.offset_sec}s'
            )

    async def run(self) -> None:
        """Heartbeats and odometry until cancelled (the program runtime cancels it on SIGINT/SIGTERM)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.node.run_heartbeats())
            group.create_task(self.odometry.run())

    async def close(self) -> None:
        try:
            await self.node.close_runtimes()
        finally:
            self.log.close()
        executions = sum(r.executions for r in self.node.runtimes.values())
        self.node.get_logger().info(
            f'host {self.host_name}: {executions} execution(s), {self.odometry.published} odometry message(s), '
            f'{self.faults.dropped} message(s) dropped by link cuts'
        )


def main(argv: Sequence[str] | None = None) -> int:
    return run_program(
        'fleet_sim_host',
        _run,
        args=list(argv) if argv is not None else None,
        startup_errors=(SimConfigError, ConfigError),
    )


def _run(program: RosProgram) -> None:
    node = program.add_node(SimHostNode(NODE_NAME, context=program.context))
    params = node.parameters
    if not params.fleet_config:
        raise ConfigError('fleet_config is required (the layout places the robots)')
    fleet = load_fleet_config(params.fleet_config)
    specs = host_agents(fleet, params.site_id, params.shard_id, params.agent_ids)
    store_dir = Path(params.store_dir)
    host = SimHost(
        fleet,
        specs,
        params.settings,
        host_name=params.host_name,
        store_dir=store_dir,
        exec_log=Path(params.exec_log) if params.exec_log else store_dir / f'exec-{params.host_name}.jsonl',
        loop=program.loop,
        node=node,
    )
    program.run_async(host.run, cleanup=host.close)


if __name__ == '__main__':
    sys.exit(main())
