"""The node set of a deployment, derived from the fleet layout: one pure function used by the ROS 2 launch files
(launch/*.py), by `fleetctl up` and by `make demo`, so the three start the same processes with the same parameters.
No rclpy and no launch import here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fleet_core import topics
from fleet_core.config import FleetConfig

ORCHESTRATOR_NODE = 'orchestrator'
STANDBY_NODE = 'standby'
AGENT_NODE = 'agent'
SIM_HOST_NODE = 'sim_host'
GATEWAY_NODE = 'gateway'
FOXGLOVE_NODE = 'foxglove'


class BringupError(ValueError):
    """The requested node set cannot be built (unknown site or agent, bad counts); the message says what to fix."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One process. ROS nodes (`node_name` set) get `--ros-args` with a node-name and namespace remap, the params
    files, then per-node `parameters`; plain programs (gateway, Foxglove server) get only `arguments`."""

    label: str
    package: str
    executable: str
    node_name: str = ''
    namespace: str = ''
    params_files: tuple[str, ...] = ()
    parameters: Mapping[str, object] = field(default_factory=dict)
    arguments: tuple[str, ...] = ()
    role: str = ''

    @property
    def is_ros_node(self) -> bool:
        return bool(self.node_name)

    def ros_arguments(self) -> list[str]:
        if not self.is_ros_node:
            return []
        args = ['-r', f'__node:={self.node_name}']
        if self.namespace:
            args += ['-r', f'__ns:={self.namespace}']
        for path in self.params_files:
            args += ['--params-file', path]
        for key, value in self.parameters.items():
            args += ['-p', f'{key}:={parameter_text(value)}']
        return args

    def argv(self) -> list[str]:
        ros = self.ros_arguments()
        return [self.executable, *self.arguments, *(['--ros-args', *ros] if ros else [])]


def parameter_text(value: object) -> str:
    """A `-p name:=value` value as YAML (how rcl parses it): lists in flow style, strings quoted only if needed."""
    if isinstance(value, list | tuple) and not value:
        return '[]'
    text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True, width=10**9)
    return text.strip().removesuffix('...').strip()


@dataclass(frozen=True, slots=True)
class BringupOptions:
    """What to start besides the orchestrators. Paths are passed to the nodes as given (make them absolute)."""

    fleet_config: str
    params_file: str = ''
    workflow_dir: str = ''
    sim_params_file: str = ''
    sites: tuple[str, ...] = ()
    standbys: int = 1
    standby_autostart: bool = True
    gateway: bool = True
    gateway_config: str = ''
    gateway_args: tuple[str, ...] = ()
    gateway_port: int | None = None
    foxglove: bool = True
    foxglove_args: tuple[str, ...] = ()
    foxglove_port: int | None = None
    sim: bool = False
    robots_per_host: int = 125
    store_dir: str = ''
    exec_log_dir: str = ''


def _sites(fleet: FleetConfig, opts: BringupOptions) -> tuple[str, ...]:
    unknown = set(opts.sites) - set(fleet.sites)
    if unknown:
        raise BringupError(f'unknown site(s) {", ".join(sorted(unknown))} (known: {", ".join(fleet.sites)})')
    return opts.sites or fleet.sites


def orchestrator_nodes(fleet: FleetConfig, opts: BringupOptions) -> list[NodeSpec]:
    """Per shard: the orchestrator and `standbys` hot standbys (same program; whichever holds the lease leads)."""
    if opts.standbys < 0:
        raise BringupError(f'standbys must be >= 0, got {opts.standbys}')
    files = (opts.params_file,) if opts.params_file else ()
    specs = []
    for site in _sites(fleet, opts):
        for shard in fleet.shards_of(site):
            roles = [ORCHESTRATOR_NODE] + [
                STANDBY_NODE if i == 0 else f'{STANDBY_NODE}_{i + 1}' for i in range(opts.standbys)
            ]
            for index, role in enumerate(roles):
                specs.append(
                    NodeSpec(
                        label=f'{role}/{site}/{shard.shard_id}',
                        package='fleet_orchestrator',
                        executable='shard_orchestrator',
                        node_name=role,
                        namespace=topics.orchestrator_namespace(site, shard.shard_id),
                        params_files=files,
                        parameters={
                            'fleet_config': opts.fleet_config,
                            'site_id': site,
                            'shard_id': shard.shard_id,
                            'orchestrator_id': f'{site}.{shard.shard_id}.{"ab"[index] if index < 2 else index}',
                            'replica_index': index,  # distinct epoch slots: no two leaders share an epoch
                            **({'workflow_dir': opts.workflow_dir} if opts.workflow_dir else {}),
                            **({} if index == 0 or opts.standby_autostart else {'autostart': False}),
                        },
                        role='active' if index == 0 else 'standby',
                    )
                )
    return specs


def server_namespace(opts: BringupOptions) -> str:
    """Namespace of a site server's gateway and Foxglove nodes: the site's when it serves one, so two site servers on
    one domain do not clash; the root when it serves several or all."""
    return f'/{opts.sites[0]}' if len(opts.sites) == 1 else ''


def gateway_nodes(opts: BringupOptions) -> list[NodeSpec]:
    for name, port in (('gateway_port', opts.gateway_port), ('foxglove_port', opts.foxglove_port)):
        if port is not None and not 0 <= port <= 65535:
            raise BringupError(f'{name} must be 0..65535 (0: any free port), got {port}')
    specs = []
    if opts.gateway:
        parameters: dict[str, object] = {}
        if opts.gateway_config:
            parameters['config_file'] = opts.gateway_config
        if opts.gateway_port is not None:
            parameters['port'] = opts.gateway_port
        specs.append(
            NodeSpec(
                'fleet_gateway',
                'fleet_gateway',
                'fleet_gateway',
                node_name=GATEWAY_NODE,
                namespace=server_namespace(opts),
                parameters=parameters,
                arguments=opts.gateway_args,
                role='gateway',
            )
        )
    if opts.foxglove:
        parameters = {'fleet_config': opts.fleet_config}
        if opts.foxglove_port is not None:
            parameters['port'] = opts.foxglove_port
        specs.append(
            NodeSpec(
                'fleet_foxglove',
                'fleet_observability',
                'fleet_foxglove',
                node_name=FOXGLOVE_NODE,
                namespace=server_namespace(opts),
                parameters=parameters,
                arguments=opts.foxglove_args,
                role='foxglove',
            )
        )
    return specs


def site_nodes(fleet: FleetConfig, opts: BringupOptions) -> list[NodeSpec]:
    """A site server: orchestrators and standbys for every shard of the chosen sites, gateway, Foxglove server."""
    return orchestrator_nodes(fleet, opts) + gateway_nodes(opts)


def sim_host_groups(fleet: FleetConfig, opts: BringupOptions) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(host name, site, shard, agents) per simulator process: each shard split into chunks of robots_per_host."""
    if opts.robots_per_host <= 0:
        raise BringupError(f'robots_per_host must be > 0, got {opts.robots_per_host}')
    groups = []
    for site in _sites(fleet, opts):
        for shard in fleet.shards_of(site):
            agents = shard.agents
            chunks = [agents[i : i + opts.robots_per_host] for i in range(0, len(agents), opts.robots_per_host)]
            for index, chunk in enumerate(chunks):
                suffix = f'_{index + 1}' if len(chunks) > 1 else ''
                groups.append((f'{site}_{shard.shard_id}{suffix}', site, shard.shard_id, tuple(chunk)))
    return groups


def sim_nodes(fleet: FleetConfig, opts: BringupOptions) -> list[NodeSpec]:
    """Simulator host processes carrying every robot of the chosen sites."""
    files = (opts.sim_params_file,) if opts.sim_params_file else ()
    specs = []
    for host, site, shard, agents in sim_host_groups(fleet, opts):
        whole_shard = agents == fleet.shard(site, shard).agents
        parameters: dict[str, object] = {
            'fleet_config': opts.fleet_config,
            'site_id': site,
            'shard_id': shard,
            'host_name': host,
        }
        if not whole_shard:
            parameters['agent_ids'] = list(agents)
        if opts.store_dir:
            # One dedup database per host process (the agent host keeps all its robots in one SQLite file).
            parameters['store_dir'] = str(Path(opts.store_dir) / host)
        if opts.exec_log_dir:
            parameters['exec_log'] = str(Path(opts.exec_log_dir) / f'exec-{host}.jsonl')
        specs.append(
            NodeSpec(
                label=f'sim_host/{host}',
                package='fleet_sim',
                executable='fleet_sim_host',
                node_name=SIM_HOST_NODE,
                namespace=f'/sim/{host}',
                params_files=files,
                parameters=parameters,
                role='sim',
            )
        )
    return specs


def robot_nodes(fleet: FleetConfig, agent_id: str, opts: BringupOptions, *, executor: str = 'sleep') -> list[NodeSpec]:
    """One agent on a robot computer (the real-robot counterpart of a simulator host)."""
    try:
        shard = fleet.shard_of_agent(agent_id)
    except ValueError as exc:
        raise BringupError(str(exc)) from None
    parameters: dict[str, object] = {
        'fleet_config': opts.fleet_config,
        'site_id': shard.site_id,
        'shard_id': shard.shard_id,
        'agent_ids': [agent_id],
        'executor': executor,
    }
    if opts.store_dir:
        parameters['store_dir'] = opts.store_dir
    return [
        NodeSpec(
            label=f'agent/{shard.site_id}/{agent_id}',
            package='fleet_agent',
            executable='fleet_agent',
            node_name=AGENT_NODE,
            namespace=topics.agent_namespace(shard.site_id, agent_id),
            params_files=(opts.params_file,) if opts.params_file else (),
            parameters=parameters,
            role='agent',
        )
    ]


def node_set(fleet: FleetConfig, opts: BringupOptions) -> list[NodeSpec]:
    """Everything `fleetctl up` starts: the site servers, plus the simulated robots when `opts.sim`."""
    return site_nodes(fleet, opts) + (sim_nodes(fleet, opts) if opts.sim else [])


def describe(specs: Sequence[NodeSpec]) -> list[dict[str, object]]:
    """A comparable, JSON-friendly view of a node set (what the node-set agreement test compares)."""
    return [
        {
            'label': s.label,
            'package': s.package,
            'executable': s.executable,
            'node_name': s.node_name,
            'namespace': s.namespace,
            'params_files': list(s.params_files),
            'parameters': dict(s.parameters),
            'arguments': list(s.arguments),
        }
        for s in specs
    ]


def default_options(fleet_config: str | Path, **overrides: object) -> BringupOptions:
    """Options with every config file taken from the fleet config's directory when present (params.yaml, sim.yaml,
    gateway.yaml, workflows/), as `config/` lays them out; `overrides` replace any field."""
    path = Path(fleet_config).resolve()
    directory = path.parent

    def existing(name: str) -> str:
        candidate = directory / name
        return str(candidate) if candidate.exists() else ''

    values: dict[str, object] = {
        'fleet_config': str(path),
        'params_file': existing('params.yaml'),
        'sim_params_file': existing('sim.yaml'),
        'gateway_config': existing('gateway.yaml'),
        'workflow_dir': existing('workflows'),
    }
    values.update(overrides)
    return BringupOptions(**values)  # type: ignore[arg-type]  # overrides name fields by contract; unknown names raise TypeError
