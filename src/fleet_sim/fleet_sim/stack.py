"""The demo's process stack: a scaled copy of the fleet layout, the node set from fleet_bringup.nodes started as
subprocesses (active orchestrators first, then standbys, simulator hosts, gateway, Foxglove server, recorder)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet_bringup.nodes import BringupOptions, NodeSpec, orchestrator_nodes, sim_nodes
from fleet_bringup.processes import Child, Supervisor
from fleet_core import topics, yaml_config
from fleet_core.config import ConfigError, FleetConfig, load_fleet_config
from fleet_sim.resources import usage

FOXGLOVE_DEFAULT_PORT = 8765
RECORD_TOPICS = (topics.FLEET_GLOB, *topics.agents_globs(topics.AGENT_TELEMETRY_TOPICS))


def write_scaled_config(source: Path, robots: int | None, target: Path) -> FleetConfig:
    """Copy the layout to `target`, with prefix-style shards resized so the fleet has about `robots` robots (the same
    rule as load_fleet_config(scale_agents=...)), and return it loaded from there."""
    raw = yaml_config.read_yaml(source, 'fleet config', ConfigError)
    expected = load_fleet_config(source, scale_agents=robots)
    scaled: Any = copy.deepcopy(raw)  # a mapping with sites: load_fleet_config above validated it
    if robots is not None:
        per_shard = len(expected.shards[0].agents) if expected.shards else 0
        for site in scaled['sites'].values():
            for shard in site['shards'].values():
                if isinstance(shard['agents'], Mapping):
                    shard['agents'] = {**shard['agents'], 'count': per_shard}
    target.write_text(f'# scaled copy of {source} for {robots} robots\n' + yaml.safe_dump(scaled, sort_keys=False))
    fleet = load_fleet_config(target)
    if fleet.agent_count != expected.agent_count:
        raise ConfigError(f'{target}: scaled layout has {fleet.agent_count} agents, expected {expected.agent_count}')
    return fleet


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(('127.0.0.1', port))
        except OSError:
            return False
    return True


def ros_env(base: Mapping[str, str]) -> dict[str, str]:
    """Children inherit the caller's domain id; discovery is always confined to this host (network rule)."""
    env = dict(base)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env.pop('ROS_STATIC_PEERS', None)
    env.setdefault('ROS_DOMAIN_ID', str(os.getpid() % 90 + 10))
    env['PYTHONUNBUFFERED'] = '1'
    return env


@dataclass(slots=True)
class DemoStack:
    """Owns every process of one demo run."""

    fleet: FleetConfig
    options: BringupOptions
    run_dir: Path
    supervisor: Supervisor
    orchestrators: list[Child] = field(default_factory=list)
    hosts: list[Child] = field(default_factory=list)
    gateway: Child | None = None
    foxglove: Child | None = None
    recorder: Child | None = None
    missing: list[str] = field(default_factory=list)
    foxglove_port: int = 0

    @classmethod
    def create(
        cls,
        fleet: FleetConfig,
        fleet_path: Path,
        config_dir: Path,
        run_dir: Path,
        env: Mapping[str, str],
        robots_per_host: int,
    ) -> DemoStack:
        options = BringupOptions(
            fleet_config=str(fleet_path),
            params_file=str(config_dir / 'params.yaml'),
            workflow_dir=str(config_dir / 'workflows'),
            sim_params_file=str(config_dir / 'sim.yaml'),
            standbys=1,
            standby_autostart=False,
            sim=True,
            robots_per_host=robots_per_host,
            store_dir=str(run_dir / 'stores'),
            exec_log_dir=str(run_dir / 'exec'),
        )
        # Orchestrator journals (default state_dir) live with the run, like the agents' stores: a demo never
        # recovers a previous run's unfinished commands.
        env = {**env, 'FLEETLANES_STATE_DIR': str(run_dir / 'state')}
        return cls(fleet, options, run_dir, Supervisor(run_dir / 'logs', env))

    def start_orchestrators(self, role: str) -> None:
        for spec in orchestrator_nodes(self.fleet, self.options):
            if spec.role == role:
                self.orchestrators.append(self.supervisor.start(spec))

    def start_hosts(self) -> None:
        self.hosts = [self.supervisor.start(spec) for spec in sim_nodes(self.fleet, self.options)]

    def start_servers(self, config_dir: Path) -> None:
        if shutil.which('fleet_gateway'):
            ready = self.run_dir / 'gateway.json'
            args: tuple[str, ...] = (
                '--config',
                str(config_dir / 'gateway.yaml'),
                '--port',
                '0',
                '--ready-file',
                str(ready),
            )
            self.gateway = self.supervisor.start(
                NodeSpec('fleet_gateway', 'fleet_gateway', 'fleet_gateway', arguments=args, role='gateway')
            )
        else:
            self.missing.append('fleet_gateway (console script not installed)')
        if shutil.which('fleet_foxglove'):
            self.foxglove_port = FOXGLOVE_DEFAULT_PORT if port_free(FOXGLOVE_DEFAULT_PORT) else 0
            args = ('--config', self.options.fleet_config, '--port', str(self.foxglove_port))
            self.foxglove = self.supervisor.start(
                NodeSpec('fleet_foxglove', 'fleet_observability', 'fleet_foxglove', arguments=args, role='foxglove')
            )
        else:
            self.missing.append('fleet_foxglove (console script not installed)')

    def start_recorder(self, output: Path) -> None:
        if not shutil.which('fleetctl') or importlib.util.find_spec('fleet_observability.recorder') is None:
            self.missing.append('MCAP recorder (fleetctl record / fleet_observability.recorder not installed)')
            return
        args = ['record', '-o', str(output), '--force']
        for glob in RECORD_TOPICS:
            args += ['--topic', glob]
        spec = NodeSpec('recorder', 'fleet_cli', 'fleetctl', arguments=tuple(args), role='recorder')
        self.recorder = self.supervisor.start(spec)

    def gateway_port(self) -> int | None:
        try:
            return int(json.loads((self.run_dir / 'gateway.json').read_text())['port'])
        except (OSError, ValueError, KeyError):
            return None

    def foxglove_url(self) -> str | None:
        if self.foxglove is None:
            return None
        match = re.search(r'listening on (ws://\S+)', self.foxglove.tail(50))
        return match.group(1) if match else None

    def recorded_messages(self) -> int | None:
        match = re.search(r'wrote (\d+) messages', self.recorder.tail(2000)) if self.recorder else None
        return int(match.group(1)) if match else None

    def orchestrator_of(self, leader_id: str) -> Child | None:
        for child in self.orchestrators:
            if child.alive() and child.spec.parameters.get('orchestrator_id') == leader_id:
                return child
        return None

    def host_of(self, host_name: str) -> Child | None:
        return next((c for c in self.hosts if c.spec.parameters.get('host_name') == host_name), None)

    def exec_logs(self) -> list[Path]:
        return sorted((self.run_dir / 'exec').glob('exec-*.jsonl'))

    def resource_figures(self, elapsed: float) -> dict[str, object]:
        """CPU seconds, mean CPU share and RSS, summed per role over the processes still running."""
        groups: dict[str, dict[str, float]] = {}
        for child in self.supervisor.children:
            used = usage(child.pid) if child.alive() else None
            if used is None:
                continue
            group = groups.setdefault(
                child.spec.role or child.spec.label, {'processes': 0, 'cpu_s': 0.0, 'rss_mb': 0.0}
            )
            group['processes'] += 1
            group['cpu_s'] += used.cpu_s
            group['rss_mb'] += used.rss_mb
        return {
            role: {
                'processes': int(g['processes']),
                'cpu_s': round(g['cpu_s'], 1),
                'cpu_pct_of_one_core': round(100 * g['cpu_s'] / max(elapsed, 1e-6), 1),
                'rss_mb': round(g['rss_mb'], 1),
            }
            for role, g in groups.items()
        }

    def stop_recorder(self) -> None:
        if self.recorder is not None:
            self.supervisor.stop(self.recorder, grace=15.0)

    def stop(self) -> None:
        self.supervisor.stop_all()
