"""ROS `/diagnostics` for shards and agents: DiagnosticArray messages built from plain stats dicts.

Shard stats use ShardStatus field names (leader_id, agents_total, agents_online, agents_lost, queue_depth,
in_flight, degradation_level, ack_latency_p99_ms, ...); agent stats use Heartbeat field names (state,
battery_pct, last_applied_seq, highest_epoch_seen, degradation_level, ...). Unknown keys are passed through as
values, so nodes can add their own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from fleet_ros import qos
from fleet_ros.convert import to_time

DIAGNOSTICS_TOPIC = '/diagnostics'
OK, WARN, ERROR, STALE = 0, 1, 2, 3
"""DiagnosticStatus levels as ints (the message field is a one-byte `bytes`)."""

AGENT_STATES = ('IDLE', 'BUSY', 'PAUSED', 'ESTOPPED', 'SAFE_MODE')
"""Heartbeat.STATE_* names by value."""


@dataclass(frozen=True, slots=True)
class DiagnosticThresholds:
    """When a shard or agent turns WARN/ERROR."""

    queue_warn: int = 1000
    ack_p99_warn_ms: float = 1000.0
    lost_fraction_error: float = 0.5
    battery_warn_pct: float = 20.0
    battery_error_pct: float = 5.0


def _value(value: Any) -> str:
    if isinstance(value, float):
        return 'nan' if math.isnan(value) else f'{value:.3f}'.rstrip('0').rstrip('.')
    if isinstance(value, list | tuple):
        return ','.join(_value(v) for v in value)
    return str(value)


def _key_values(stats: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=str(k), value=_value(v)) for k, v in sorted(stats.items())]


def shard_level(stats: Mapping[str, Any], limits: DiagnosticThresholds = DiagnosticThresholds()) -> tuple[int, str]:
    """(DiagnosticStatus level, one-line message) for a shard."""
    total = int(stats.get('agents_total', 0))
    online = int(stats.get('agents_online', 0))
    lost = int(stats.get('agents_lost', 0))
    degradation = int(stats.get('degradation_level', 0))
    queued = sum(int(d) for d in stats.get('queue_depth', ()) or ())
    p99 = float(stats.get('ack_latency_p99_ms', 0.0) or 0.0)
    problems: list[tuple[int, str]] = []
    if not stats.get('leader_id'):
        problems.append((ERROR, 'no leader'))
    if total and lost / total >= limits.lost_fraction_error:
        problems.append((ERROR, f'{lost}/{total} agents lost'))
    elif lost:
        problems.append((WARN, f'{lost}/{total} agents lost'))
    if degradation >= 2:
        problems.append((ERROR, 'degradation 2: telemetry minimal, LOW shed'))
    elif degradation == 1:
        problems.append((WARN, 'degradation 1: telemetry reduced'))
    if queued >= limits.queue_warn:
        problems.append((WARN, f'{queued} commands queued'))
    if p99 >= limits.ack_p99_warn_ms:
        problems.append((WARN, f'ack p99 {p99:.0f} ms'))
    if not problems:
        return OK, f'{online}/{total} agents online'
    level = max(p[0] for p in problems)
    return level, '; '.join(m for _, m in problems)


def agent_level(stats: Mapping[str, Any], limits: DiagnosticThresholds = DiagnosticThresholds()) -> tuple[int, str]:
    """(DiagnosticStatus level, one-line message) for an agent."""
    state = stats.get('state', 'IDLE')
    state_name = AGENT_STATES[state] if isinstance(state, int) and 0 <= state < len(AGENT_STATES) else str(state)
    battery = float(stats.get('battery_pct', math.nan))
    problems: list[tuple[int, str]] = []
    if state_name == 'SAFE_MODE':
        problems.append((ERROR, 'safe mode: dedup store unusable, refusing commands'))
    elif state_name == 'ESTOPPED':
        problems.append((WARN, 'e-stopped'))
    if not math.isnan(battery):
        if battery <= limits.battery_error_pct:
            problems.append((ERROR, f'battery {battery:.0f}%'))
        elif battery <= limits.battery_warn_pct:
            problems.append((WARN, f'battery {battery:.0f}%'))
    if stats.get('lost'):
        problems.append((ERROR, 'lost: no heartbeat'))
    if not problems:
        return OK, state_name.lower()
    return max(p[0] for p in problems), '; '.join(m for _, m in problems)


def shard_status(
    site: str, shard: str, stats: Mapping[str, Any], limits: DiagnosticThresholds = DiagnosticThresholds()
) -> DiagnosticStatus:
    level, message = shard_level(stats, limits)
    return DiagnosticStatus(
        level=bytes([level]),
        name=f'fleet/{site}/{shard}/orchestrator',
        message=message,
        hardware_id=f'{site}/{shard}',
        values=_key_values(stats),
    )


def agent_status(
    site: str, agent: str, stats: Mapping[str, Any], limits: DiagnosticThresholds = DiagnosticThresholds()
) -> DiagnosticStatus:
    level, message = agent_level(stats, limits)
    return DiagnosticStatus(
        level=bytes([level]),
        name=f'fleet/{site}/{agent}/agent',
        message=message,
        hardware_id=agent,
        values=_key_values(stats),
    )


def diagnostic_array(statuses: Sequence[DiagnosticStatus], stamp: float | None = None) -> DiagnosticArray:
    array = DiagnosticArray(status=list(statuses))
    array.header.stamp = to_time(time.time() if stamp is None else stamp)
    return array


def shard_diagnostics(
    site: str, shard: str, stats: Mapping[str, Any], *, stamp: float | None = None
) -> DiagnosticArray:
    """A DiagnosticArray with the shard's status (what an orchestrator publishes)."""
    return diagnostic_array([shard_status(site, shard, stats)], stamp)


def agent_diagnostics(
    site: str, agent: str, stats: Mapping[str, Any], *, stamp: float | None = None
) -> DiagnosticArray:
    """A DiagnosticArray with one agent's status (what an agent publishes)."""
    return diagnostic_array([agent_status(site, agent, stats)], stamp)


def shard_stats_from_status(msg: Any) -> dict[str, Any]:
    """The stats dict of a fleet_interfaces/ShardStatus message."""
    fields = (
        'leader_id', 'epoch', 'agents_total', 'agents_online', 'agents_lost', 'in_flight', 'submitted', 'succeeded',
        'failed', 'expired', 'rejected', 'shed', 'retries', 'duplicates_suppressed', 'ack_latency_p50_ms',
        'ack_latency_p99_ms', 'degradation_level',
    )  # fmt: skip
    stats: dict[str, Any] = {name: getattr(msg, name) for name in fields}
    stats['queue_depth'] = [int(d) for d in msg.queue_depth]
    if msg.lost_agent_ids:
        stats['lost_agent_ids'] = list(msg.lost_agent_ids)
    return stats


class DiagnosticsPublisher:
    """Publishes `source()` on /diagnostics every `period_sec` from a node timer (executor thread)."""

    def __init__(self, node: Node, source: Callable[[], DiagnosticArray], *, period_sec: float = 1.0) -> None:
        self._source = source
        self._publisher = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, qos.EVENTS)
        self._timer = node.create_timer(period_sec, self.publish_now)
        self._node = node

    def publish_now(self) -> None:
        self._publisher.publish(self._source())

    def close(self) -> None:
        self._node.destroy_timer(self._timer)
        self._node.destroy_publisher(self._publisher)
