"""The shard orchestrator's ROS parameters, declared on the node itself with a default and a description; what cannot
change while it runs is read_only, numbers carry ranges, and the few that can change are applied by `apply`."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from rclpy.node import Node
from rclpy.parameter import Parameter

from fleet_core.leadership import EPOCH_SLOTS
from fleet_ros.params import declare

RUNTIME = ('trace_sample_fraction', 'tracing_enabled', 'outcome_retention_sec')
"""The parameters `ros2 param set` changes while the node runs (tracing at once, retention at the next prune)."""


@dataclass(slots=True)
class OrchestratorParameters:
    site_id: str
    shard_id: str
    fleet_config: str
    orchestrator_id: str
    replica_index: int
    state_dir: str
    journal_durability: str
    outcome_retention_sec: float
    trace_sample_fraction: float
    tracing_enabled: bool
    retry_jitter_seed: int
    metrics_port: int
    workflow_dir: str

    def apply(self, params: list[Parameter]) -> list[str]:
        """Take the new values of runtime parameters; returns the names that changed."""
        changed = []
        for param in params:
            if param.name == 'trace_sample_fraction':
                self.trace_sample_fraction = float(param.value)
            elif param.name == 'tracing_enabled':
                self.tracing_enabled = bool(param.value)
            elif param.name == 'outcome_retention_sec':
                self.outcome_retention_sec = float(param.value)
            else:
                continue
            changed.append(param.name)
        return changed


def declare_parameters(node: Node) -> OrchestratorParameters:
    # What defines the shard, the replica and its files is read_only: changing it means a new process.
    site_id = declare(node, 'site_id', 'site_a', 'site of the shard this orchestrator serves', read_only=True)
    shard_id = declare(node, 'shard_id', 'zone_1', 'shard this orchestrator serves', read_only=True)
    fleet_config = declare(
        node,
        'fleet_config',
        os.environ.get('FLEETLANES_CONFIG', ''),
        'fleet layout YAML (config/fleet.yaml)',
        read_only=True,
    )
    orchestrator_id = declare(
        node,
        'orchestrator_id',
        f'{socket.gethostname()}-{os.getpid()}',
        'unique id of this replica in leases; keep it stable across restarts to find its journal again',
        read_only=True,
    )
    replica_index = declare(
        node,
        'replica_index',
        -1,
        f'epoch slot of this replica, distinct per replica of a shard (0..{EPOCH_SLOTS - 1}); '
        '-1: derived from orchestrator_id (a hash: set it explicitly to guarantee distinct epochs)',
        read_only=True,
        value_range=(-1, EPOCH_SLOTS - 1),
    )
    state_dir = declare(
        node,
        'state_dir',
        '',
        "directory of this replica's shard journal (journal.db); empty: $FLEETLANES_STATE_DIR or ~/.fleetlanes, "
        'then shards/<site>/<shard>/<orchestrator_id>',
        read_only=True,
    )
    journal_durability = declare(
        node,
        'journal_durability',
        'full',
        'full: a submission is fsynced before it is answered (survives power loss); normal: survives a process '
        'crash only',
        read_only=True,
    )
    outcome_retention_sec = declare(
        node,
        'outcome_retention_sec',
        3600.0,
        'how long decided outcomes and request ids stay queryable in the journal (s)',
        value_range=(1.0, 30 * 86400.0),
    )
    trace_sample_fraction = declare(
        node,
        'trace_sample_fraction',
        -1.0,
        'share of submissions traced (0..1); < 0: from fleet_config tracing',
        value_range=(-1.0, 1.0),
    )
    tracing_enabled = declare(node, 'tracing_enabled', True, 'publish TraceEvents (if fleet_config allows it)')
    retry_jitter_seed = declare(
        node,
        'retry_jitter_seed',
        0,
        'seed of the retry jitter RNG (0 = from the clock)',
        read_only=True,
        value_range=(0, 2**31 - 1),
    )
    metrics_port = declare(
        node,
        'metrics_port',
        -1,
        'Prometheus endpoint port on 127.0.0.1 (0 = any free port, < 0 = no metrics)',
        read_only=True,
        value_range=(-1, 65535),
    )
    workflow_dir = declare(
        node,
        'workflow_dir',
        '',
        'directory of workflow YAML files (empty: workflows/ next to fleet_config)',
        read_only=True,
    )
    return OrchestratorParameters(
        site_id=site_id,
        shard_id=shard_id,
        fleet_config=fleet_config,
        orchestrator_id=orchestrator_id,
        replica_index=replica_index,
        state_dir=state_dir,
        journal_durability=journal_durability,
        outcome_retention_sec=outcome_retention_sec,
        trace_sample_fraction=trace_sample_fraction,
        tracing_enabled=tracing_enabled,
        retry_jitter_seed=retry_jitter_seed,
        metrics_port=metrics_port,
        workflow_dir=workflow_dir,
    )
