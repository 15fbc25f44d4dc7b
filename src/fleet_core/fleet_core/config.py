"""The fleet layout (sites, shards, agents) and protocol tuning, loaded from YAML and validated once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from fleet_core import yaml_config
from fleet_core.degradation import DegradationConfig, DegradationConfigError
from fleet_core.health import HealthConfig, HealthConfigError
from fleet_core.leadership import LeaseConfig, LeaseConfigError
from fleet_core.topics import InvalidName, check_name
from fleet_core.trace import TraceConfigError, TraceSettings, parse_trace_settings
from fleet_core.waves import WaveConfig, WaveError

T = TypeVar('T')

DEFAULT_CONFIG_ENV = 'FLEETLANES_CONFIG'


class ConfigError(ValueError):
    """A configuration file is missing, malformed or inconsistent; the message names the file and key."""


DURABILITY_LEVELS = ('normal', 'full')
"""`intake.durability`: SQLite synchronous=NORMAL or FULL for the agents' dedup stores (see IntakeSettings)."""


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """Orchestrator-side command protocol tuning (docs/design.md, "The command protocol")."""

    in_flight_per_agent: int = 1
    retry_initial_sec: float = 0.5
    retry_max_sec: float = 4.0
    retry_budget: int = 5
    deadline_grace_sec: float = 1.0
    max_queue_per_agent: int = 256
    default_ttl_sec: float = 30.0
    max_ttl_sec: float = 3600.0


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    """Agent-side command intake tuning."""

    clock_skew_tolerance_sec: float = 0.25
    max_ttl_sec: float = 3600.0
    max_args_bytes: int = 4096
    dedup_window: int = 10_000
    accept_ack_delay_sec: float = 0.2
    """ACCEPTED goes out only for a command still running after this long (a quick command is answered by its final
    ack alone). Below dispatch.retry_initial_sec, so a long command is never re-sent; orchestrators subtract it when
    they judge how fast agents answer."""

    durability: str = 'normal'
    """The agents' dedup store: 'normal' (SQLite WAL, synchronous=NORMAL) survives a process crash but a power loss
    may drop the last commits; 'full' (synchronous=FULL, an fsync per commit) survives a power loss too. Either way
    a start guard (fsynced before every execution) detects lost commits and puts the agent in safe mode."""

    def __post_init__(self) -> None:
        if self.durability not in DURABILITY_LEVELS:
            raise ConfigError(
                f'intake.durability: expected one of {", ".join(DURABILITY_LEVELS)}, got {self.durability!r}'
            )

    def answer_delay(self, elapsed_sec: float, *, accepted: bool) -> float:
        """How long an agent took to answer, from `elapsed_sec` until its first ack: less the deliberate hold when
        that ack is an ACCEPTED."""
        return max(0.0, elapsed_sec - (self.accept_ack_delay_sec if accepted else 0.0))


_OWN_VALIDATION_ERRORS = (HealthConfigError, LeaseConfigError, WaveError, DegradationConfigError)
"""The pure modules validate their own config blocks; config.py re-raises their errors with the file name."""


@dataclass(frozen=True, slots=True)
class ShardConfig:
    site_id: str
    shard_id: str
    agents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """The whole deployment: which agents belong to which shard of which site, and the protocol tuning."""

    shards: tuple[ShardConfig, ...]
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    health: HealthConfig = field(default_factory=HealthConfig)
    leadership: LeaseConfig = field(default_factory=LeaseConfig)
    operations: WaveConfig = field(default_factory=WaveConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    tracing: TraceSettings = field(default_factory=TraceSettings)
    source: str = '<memory>'

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.site_id for s in self.shards))

    def shard(self, site_id: str, shard_id: str) -> ShardConfig:
        for shard in self.shards:
            if shard.site_id == site_id and shard.shard_id == shard_id:
                return shard
        raise ConfigError(f'{self.source}: no shard {shard_id!r} in site {site_id!r}')

    def shards_of(self, site_id: str) -> tuple[ShardConfig, ...]:
        found = tuple(s for s in self.shards if s.site_id == site_id)
        if not found:
            raise ConfigError(f'{self.source}: unknown site {site_id!r} (known: {", ".join(self.sites)})')
        return found

    def shard_of_agent(self, agent_id: str) -> ShardConfig:
        for shard in self.shards:
            if agent_id in shard.agents:
                return shard
        raise ConfigError(f'{self.source}: unknown agent {agent_id!r}')

    @property
    def agent_count(self) -> int:
        return sum(len(s.agents) for s in self.shards)


_SELF_VALIDATING = (HealthConfig, LeaseConfig, WaveConfig, DegradationConfig)


def _settings(cls: type[T], raw: object, source: str, section: str) -> T:
    """Build the dataclass `cls` from a mapping. Classes of the pure modules validate themselves (their errors
    are re-raised naming the file); the plain settings here need every value > 0."""
    return yaml_config.build(
        cls,
        raw,
        source,
        section,
        ConfigError,
        validate=None if cls in _SELF_VALIDATING else yaml_config.positive,
        own_errors=(*_OWN_VALIDATION_ERRORS, ConfigError),
    )


def _agents(raw: object, where: str) -> tuple[str, ...]:
    if isinstance(raw, list):
        agents = tuple(str(a) for a in raw)
    elif isinstance(raw, Mapping) and set(raw) == {'prefix', 'count'}:
        count = raw['count']
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            raise ConfigError(f'{where}.count: expected a positive integer, got {count!r}')
        agents = tuple(f'{raw["prefix"]}{i:03d}' for i in range(1, count + 1))
    else:
        raise ConfigError(f'{where}: expected a list of agent ids or {{prefix: ..., count: N}}')
    for agent in agents:
        try:
            check_name('agent', agent)
        except InvalidName as exc:
            raise ConfigError(f'{where}: {exc}') from None
    if len(set(agents)) != len(agents):
        raise ConfigError(f'{where}: duplicate agent ids')
    return agents


def parse_fleet_config(raw: object, source: str = '<memory>', *, scale_agents: int | None = None) -> FleetConfig:
    """Validate a decoded YAML document. `scale_agents` overrides the per-shard count of prefix-style shards
    so that their total is (about) that many agents, for `make demo ROBOTS=N`."""
    if not isinstance(raw, Mapping) or 'sites' not in raw:
        raise ConfigError(f'{source}: top level must be a mapping with a "sites" key')
    unknown = set(raw) - {'sites', 'dispatch', 'intake', 'health', 'leadership', 'operations', 'degradation', 'tracing'}
    if unknown:
        raise ConfigError(f'{source}: unknown top-level key(s) {", ".join(sorted(map(str, unknown)))}')
    sites = raw['sites']
    if not isinstance(sites, Mapping) or not sites:
        raise ConfigError(f'{source}: sites: expected a non-empty mapping of site id to shards')
    shard_specs: list[tuple[str, str, object, str]] = []
    for site_id, site in sites.items():
        where = f'{source}: sites.{site_id}'
        try:
            check_name('site', str(site_id))
        except InvalidName as exc:
            raise ConfigError(f'{where}: {exc}') from None
        if not isinstance(site, Mapping) or not isinstance(site.get('shards'), Mapping) or not site['shards']:
            raise ConfigError(f'{where}.shards: expected a non-empty mapping of shard id to agents')
        for shard_id, shard in site['shards'].items():
            swhere = f'{where}.shards.{shard_id}'
            try:
                check_name('shard', str(shard_id))
            except InvalidName as exc:
                raise ConfigError(f'{swhere}: {exc}') from None
            if not isinstance(shard, Mapping) or 'agents' not in shard:
                raise ConfigError(f'{swhere}: expected a mapping with an "agents" key')
            shard_specs.append((str(site_id), str(shard_id), shard['agents'], f'{swhere}.agents'))
    if scale_agents is not None:
        per_shard = max(1, scale_agents // len(shard_specs))
        shard_specs = [
            (site, shard, {**agents, 'count': per_shard} if isinstance(agents, Mapping) else agents, where)
            for site, shard, agents, where in shard_specs
        ]
    shards = tuple(ShardConfig(site, shard, _agents(agents, where)) for site, shard, agents, where in shard_specs)
    seen: dict[str, str] = {}
    for shard in shards:
        for agent in shard.agents:
            if agent in seen:
                raise ConfigError(f'{source}: agent {agent!r} is in both {seen[agent]} and {shard.shard_id}')
            seen[agent] = shard.shard_id
    dispatch = _settings(DispatchSettings, raw.get('dispatch'), source, 'dispatch')
    intake = _settings(IntakeSettings, raw.get('intake'), source, 'intake')
    if intake.accept_ack_delay_sec >= dispatch.retry_initial_sec:
        raise ConfigError(
            f'{source}: intake.accept_ack_delay_sec ({intake.accept_ack_delay_sec}) must be below '
            f'dispatch.retry_initial_sec ({dispatch.retry_initial_sec}), or running commands would be re-sent'
        )
    return FleetConfig(
        shards=shards,
        dispatch=dispatch,
        intake=intake,
        health=_settings(HealthConfig, raw.get('health'), source, 'health'),
        leadership=_settings(LeaseConfig, raw.get('leadership'), source, 'leadership'),
        operations=_settings(WaveConfig, raw.get('operations'), source, 'operations'),
        degradation=_settings(DegradationConfig, raw.get('degradation'), source, 'degradation'),
        tracing=_tracing(raw.get('tracing'), f'{source}: tracing'),
        source=source,
    )


def _tracing(raw: object, where: str) -> TraceSettings:
    try:
        return parse_trace_settings(raw, where)
    except TraceConfigError as exc:
        raise ConfigError(str(exc)) from None


def load_fleet_config(path: str | os.PathLike[str] | None = None, *, scale_agents: int | None = None) -> FleetConfig:
    """Load the fleet layout from `path`, else $FLEETLANES_CONFIG. Raises ConfigError naming file and key."""
    chosen = path or os.environ.get(DEFAULT_CONFIG_ENV)
    if not chosen:
        raise ConfigError(f'no fleet config given: pass --config or set ${DEFAULT_CONFIG_ENV}')
    raw = yaml_config.read_yaml(chosen, 'fleet config', ConfigError)
    return parse_fleet_config(raw, str(Path(chosen)), scale_agents=scale_agents)
