"""What the orchestrator's on_configure derives from its parameters before it creates any endpoint: the shard's
config (checked against the node's namespace), this replica's journal and epoch slot, its workflows and its trace
settings. No ROS endpoints here: the node (and the modules that use them) create those."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleet_core import topics
from fleet_core.config import ConfigError, FleetConfig, ShardConfig, load_fleet_config
from fleet_core.leadership import EPOCH_SLOTS
from fleet_core.shard_journal import ShardJournal
from fleet_core.trace import TraceSettings
from fleet_orchestrator.durable import default_state_dir
from fleet_orchestrator.mission_server import WorkflowLibrary
from fleet_orchestrator.parameters import OrchestratorParameters


@dataclass(frozen=True, slots=True)
class OrchestratorOptions:
    site_id: str
    shard_id: str
    orchestrator_id: str
    fleet: FleetConfig
    trace: TraceSettings


class NotConfigured(RuntimeError):
    """A step that needs what on_configure sets up (options, journal) ran before it: a programming error."""

    def __init__(self, what: str) -> None:
        super().__init__(f'{what} not set: the orchestrator is not configured')


def load_shard(params: OrchestratorParameters, namespace: str) -> tuple[FleetConfig, ShardConfig]:
    """The fleet config and this node's shard in it; raises ConfigError (also when the node's namespace belongs to
    another shard)."""
    fleet = load_fleet_config(params.fleet_config or None)
    shard = fleet.shard(params.site_id, params.shard_id)
    if namespace.startswith('/fleet/') and namespace != topics.shard_prefix(shard.site_id, shard.shard_id):
        raise ConfigError(
            f'node namespace {namespace} belongs to another shard than site_id={shard.site_id} '
            f'shard_id={shard.shard_id}: fix the shard_id parameter or the namespace'
        )
    return fleet, shard


def open_journal(params: OrchestratorParameters, shard: ShardConfig) -> ShardJournal:
    """This replica's journal under `state_dir` (default: durable.default_state_dir); raises JournalUnavailable, or
    ValueError for an unknown journal_durability."""
    state_dir = (
        Path(params.state_dir).expanduser()
        if params.state_dir
        else default_state_dir(shard.site_id, shard.shard_id, params.orchestrator_id)
    )
    return ShardJournal(state_dir / 'journal.db', durability=params.journal_durability)


def epoch_slot(params: OrchestratorParameters) -> int:
    """The replica_index parameter, else a slot derived from the orchestrator_id (fleet_core.leadership)."""
    if params.replica_index >= 0:
        return params.replica_index
    return zlib.crc32(params.orchestrator_id.encode()) % EPOCH_SLOTS


def workflow_library(params: OrchestratorParameters, fleet: FleetConfig, log: Callable[[str], None]) -> WorkflowLibrary:
    """The workflow_dir parameter's workflows, else those beside the fleet config; each one that fails is logged."""
    workflow_dir = Path(params.workflow_dir) if params.workflow_dir else Path(fleet.source).parent / 'workflows'
    library = WorkflowLibrary(workflow_dir)
    for name, error in library.errors.items():
        log(f'workflow {name} not loaded: {error}')
    return library


def trace_settings(params: OrchestratorParameters, fleet: FleetConfig) -> TraceSettings:
    """The fleet's tracing block, overridden by the tracing_enabled and trace_sample_fraction parameters."""
    return TraceSettings(
        enabled=bool(params.tracing_enabled) and fleet.tracing.enabled,
        sample_fraction=float(params.trace_sample_fraction)
        if params.trace_sample_fraction >= 0
        else fleet.tracing.sample_fraction,
        pending_commands=fleet.tracing.pending_commands,
    )
